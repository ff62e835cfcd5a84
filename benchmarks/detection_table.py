"""The paper's Table 7 at a scale that runs here: Faster R-CNN on the raccoon photographs with ShuffleNet and
MobileNet backbones of matched complexity, at the paper's two input sizes, and docs/detection.md from the results.

Every run is ``shufflenet detect train`` with one recipe and one time budget (``--minutes``, part of each run's
name; the page shows the runs of the budget asked for); a finished run (its result file exists) is skipped and an
unfinished one resumes, so the table can be built over several sittings. Backbones start from CIFAR-10 weights
trained by our own trainer for the same number of epochs (``--pretrain-epochs``; the reproduce grid's seed-0 cell
when there is one, else a cell of the backbones' own grid, trained first through the reproduce grid's runner), and
one run per size starts from random weights as the control.

    python benchmarks/detection_table.py --cifar ../shared/data/cifar10 --raccoon ../shared/data/raccoon
        [--minutes 12] [--pretrain-epochs 4] [--sizes 300 600] [--workers N] [--report-only]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from shufflenet.cli import main as shufflenet
from shufflenet.experiments.cluster import run_grid
from shufflenet.experiments.grid import Cell, Grid
from shufflenet.experiments.table1 import profile_by_name
from shufflenet.io.atomic import atomic_output
from shufflenet.paper.published import TABLE7_MAP
from shufflenet.text_table import format_table

ROOT = Path(__file__).resolve().parent.parent
# Backbones of matched complexity (MFLOPs at 224): the paper's cheapest ShuffleNet against MobileNet V1 0.25
# (Table 5's rung) and MobileNet V2 0.35 (the narrowest released width).
BACKBONES = ("shufflenet_v1_x0_5_g3", "mobilenet_v1_x0_25", "mobilenet_v2_x0_35")
CONTROL = "shufflenet_v1_x0_5_g3"  # also trained from random weights
HEADERS = ("backbone", "MFLOPs @224", "shorter side", "backbone start", "epochs in the budget", "mAP@[.5:.95] %",
           "mAP@.5 %", "detector ms/image")


def pretrained(cifar: str, epochs: int, backbones: list[str], workers: int | None = None) -> dict[str, Path]:
    """CIFAR-10 weights of every backbone after ``epochs`` epochs of our trainer: the reproduce grid's seed-0 cell
    where it has one (the same training), else a cell of the backbones' own grid (results/detection/backbones,
    runs/detection-backbones), trained now through the reproduce grid's runner (skip, resume, Ray)."""
    cells = {backbone: Cell(backbone, backbone, None, 0, epochs) for backbone in backbones}
    reproduce = Grid("cifar10", cifar, ROOT / "results" / "reproduce", ROOT / "runs" / "reproduce", check_md5=False)
    own = Grid("cifar10", cifar, ROOT / "results" / "detection" / "backbones", ROOT / "runs" / "detection-backbones",
               check_md5=False)
    grids = {backbone: reproduce if reproduce.result_path(cell).is_file() else own for backbone, cell in cells.items()}
    todo = [cells[backbone] for backbone, grid in grids.items() if grid is own]
    run_grid(own, todo, workers=workers)
    failed = own.failures(todo)
    if failed:
        raise SystemExit(f"backbone pre-training failed: {failed}")
    return {backbone: grid.runs / cells[backbone].name / "last.safetensors" for backbone, grid in grids.items()}


def record_path(backbone: str, size: int, pretrained: bool, minutes: float) -> Path:
    start = "cifar" if pretrained else "random"
    return ROOT / "results" / "detection" / f"{backbone}-{size}-{start}-{minutes:g}min.json"


def run(backbone: str, size: int, weights: Path | None, raccoon: Path, minutes: float) -> Path:
    record = record_path(backbone, size, weights is not None, minutes)
    name = record.stem
    if record.is_file():
        return record
    state = ROOT / "runs" / "detection" / name / "checkpoint.pt"
    argv = ["detect", "train", backbone, "--data-dir", str(raccoon / "images"), "--annotations",
            str(raccoon / "annotations"), "--train-split", str(raccoon / "data" / "train_labels.csv"), "--test-split",
            str(raccoon / "data" / "test_labels.csv"), "--min-size", str(size), "--max-size", str(size * 5 // 3),
            "--epochs", "100", "--time-budget", str(minutes), "--eval-every", "100", "--output",
            str(ROOT / "runs" / "detection"), "--name", name, "--record", str(record)]
    argv += ["--backbone-weights", str(weights)] if weights else ["--frozen-stages", "-1", "--no-norm-eval"]
    argv += ["--resume", "auto"] if state.is_file() else ["--overwrite"]
    code = shufflenet(argv)
    if code:
        raise SystemExit(code)
    add_latency(record, ROOT / "runs" / "detection" / name / "last.safetensors", raccoon)
    return record


def add_latency(record: Path, weights: Path, raccoon: Path) -> None:
    """The trained detector's latency on one test photograph (1 thread, median of 10), added to its record."""
    import torch

    from shufflenet.bench.latency import time_calls
    from shufflenet.data.images import read_image
    from shufflenet.detection.model import load_detector
    from shufflenet.detection.predict import detect
    from shufflenet.io.atomic import write_atomically

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    detector = load_detector(weights)
    image = read_image(raccoon / "images" / test_images(raccoon, 1)[0])
    timing = time_calls(lambda: detect(detector, image, 0.5), repeats=10, warmup=2)
    torch.set_num_threads(threads)
    data = json.loads(record.read_text())
    data["latency_ms"] = timing.median_ms
    write_atomically(record, (json.dumps(data, indent=1) + "\n").encode())


def test_images(raccoon: Path, count: int) -> list[str]:
    from shufflenet.detection.data import read_split

    return read_split(raccoon / "data" / "test_labels.csv")[:count]


def predicted_images(best: dict, raccoon: Path, docs: Path) -> list[Path]:
    """Three test photographs with the best run's boxes drawn, for the docs page."""
    from shufflenet.detection.model import load_detector
    from shufflenet.detection.predict import predict_images

    detector = load_detector(ROOT / "runs" / "detection" / best["run"] / "last.safetensors")
    paths = [raccoon / "images" / name for name in test_images(raccoon, 3)]
    predict_images(detector, paths, docs / "detection", score_threshold=0.5)
    return [docs / "detection" / f"{path.stem}.png" for path in paths]


def results_table(records: list[dict]) -> str:
    """The runs' table, one row per result record."""
    rows = []
    for r in sorted(records, key=lambda r: (r["min_size"], r["backbone"], r["config"]["backbone_weights"] is None)):
        cost = profile_by_name(r["backbone"])
        latency = r.get("latency_ms")
        rows.append((r["backbone"], round(cost.mflops, 1), r["min_size"],
                     "CIFAR-10" if r["config"]["backbone_weights"] else "random", r["final"]["epoch"],
                     round(r["map"], 2), round(r["map50"], 2), None if latency is None else round(latency)))
    return format_table(HEADERS, rows)


def render(records: list[dict], docs: Path, minutes: float, pretrain_epochs: int, raccoon: Path) -> None:
    paper = [(name, f"{m300}%", f"{m600}%") for name, (m300, m600) in TABLE7_MAP.items()]
    best = max(records, key=lambda r: r["map"]) if records else None
    pictures = predicted_images(best, raccoon, docs) if best and (raccoon / "images").is_dir() else []
    shown = "\n".join(f"![{p.stem}](detection/{p.name})" for p in pictures)
    machine = records[0]["machine"] if records else {"cpu": "?", "date": "?"}
    text = f"""# Detection with our backbones (the paper's Table 7, at a scale that runs here; generated)

Generated by `python benchmarks/detection_table.py --minutes {minutes:g} --pretrain-epochs {pretrain_epochs}` from
`results/detection/*.json`. Faster R-CNN (torchvision's)
with a feature pyramid on the backbone's stride 8/16/32 maps, trained on the 160 training photographs of the
raccoon set (one class) and scored on its 40 test photographs by pycocotools (mAP over IoU 0.50:0.95, the
paper's metric, and mAP at IoU 0.50). One recipe (SGD, lr 0.005 at batch 4, cosine after a 1-epoch warm-up,
horizontal flips) and one budget: {minutes:g} minutes of training per run; backbones pre-trained on CIFAR-10 by our
trainer for {pretrain_epochs} epochs each (first two feature levels frozen, BN statistics frozen), or from random
weights (nothing frozen) as the control. Machine: {machine['cpu']}, {machine['date']}.

{results_table(records)}

The paper (COCO minival, ImageNet-pre-trained backbones, Faster R-CNN in Caffe, mAP@[.5:.95]):

{format_table(("model", "300x", "600x"), paper)}

A different data set (200 photographs of one class, against COCO's 80 classes), a different pre-training (a few
epochs of 32x32 CIFAR-10, against ImageNet at 224) and a CPU budget of minutes: the numbers are not comparable
with the paper's, only the backbones with each other under the same recipe.

""" + (f"Test photographs with the boxes of the best run ({best['run']}, score at least 0.5):\n\n{shown}\n\n"
       if pictures else "") + """<!-- discussion:start -->
<!-- discussion:end -->
"""
    target = docs / "detection.md"
    if target.is_file():
        old = target.read_text()
        if "<!-- discussion:start -->" in old:
            kept = old[old.index("<!-- discussion:start -->"):old.index("<!-- discussion:end -->")]
            text = text.replace("<!-- discussion:start -->\n", kept, 1)
    with atomic_output(target) as temporary:
        temporary.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--raccoon", default=str(ROOT.parent / "shared" / "data" / "raccoon"))
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget of every run")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 600])
    parser.add_argument("--workers", type=int, help="backbones pre-trained at once (as `shufflenet reproduce "
                                                    "--workers`; 0: one at a time, without Ray)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    raccoon = Path(args.raccoon)
    if not args.report_only:
        needed = [backbone for backbone in BACKBONES
                  if any(not record_path(backbone, size, True, args.minutes).is_file() for size in args.sizes)]
        weights = pretrained(args.cifar, args.pretrain_epochs, needed, args.workers)
        for size in args.sizes:
            for backbone in weights:  # the backbones whose runs are not all done
                run(backbone, size, weights[backbone], raccoon, args.minutes)
            run(CONTROL, size, None, raccoon, args.minutes)
    records = [record for p in sorted((ROOT / "results" / "detection").glob("*.json"))
               if (record := json.loads(p.read_text()))["config"]["time_budget"] == args.minutes]
    render(records, ROOT / "docs", args.minutes, args.pretrain_epochs, raccoon)


if __name__ == "__main__":
    main()
