"""README.md's "Measured" table, generated from the result files under results/ (every figure in it comes from
one of them, with the command, machine, CPU flags and date the file records).

    python benchmarks/readme_tables.py            # rewrite the block between the markers in README.md
    python benchmarks/readme_tables.py --check    # exit 1 when README.md is not what the files give
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from shufflenet.experiments.report import load_cells, scale_summary
from shufflenet.experiments.tables import TRAINING_TABLES, table_rows

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- measured:start -->", "<!-- measured:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = ROOT / "results" / name
    return json.loads(path.read_text()) if path.is_file() else None


def machine(record: dict[str, Any]) -> str:
    m = record["machine"]
    flags = "AVX-512 VNNI" if "avx512_vnni" in m["cpu_flags"] else "AVX2" if "avx2" in m["cpu_flags"] else "no AVX2"
    if "amx_int8" in m["cpu_flags"]:  # AMX tiles: oneDNN's bf16 and int8 matrix kernels use them
        flags += ", AMX"
    return f"{m['cpu']}, {m['logical_cpus']} CPUs ({flags}), {m['date'][:10]}"


def minutes_to(rows: list[dict[str, Any]], target: float) -> str:
    """Wall-clock minutes at the first evaluation at or above ``target`` (TTA counts at the last epoch, and says
    so when only it reaches the target)."""
    for row in rows:
        plain, tta = row.get("eval_top1"), row.get("eval_tta_top1")
        if plain is not None and plain >= target:
            return f"{row['wall_seconds'] / 60:.1f}"
        if tta is not None and tta >= target:
            return f"{row['wall_seconds'] / 60:.1f} with mirror-image TTA"
    return "not reached"


def training_row(name: str, label: str) -> tuple[str, str, str, str] | None:
    record = load(name)
    if record is None:
        return None
    rows, final = record["metrics"], record["final"]
    rates = [r["images_per_sec"] for r in rows[1:]] or [rows[0]["images_per_sec"]]
    tta = f", {final['eval_tta_top1']:.2f}% with mirror-image TTA" if "eval_tta_top1" in final else ""
    marks = ", ".join(f"{t}%: {minutes_to(rows, t)}" for t in (80, 85, 88.7, 90))
    figure = (f"last epoch ({final['epoch']}): **{final['eval_top1']:.2f}% top-1**{tta}; "
              f"{final['wall_seconds'] / 60:.1f} min wall-clock in all; minutes to {marks}; "
              f"{statistics.median(rates):.0f} images/s (median epoch)")
    return label, f"`{record['command']}`", figure, machine(record)


def main_job() -> tuple[str, str, str, str] | None:
    record = load("main_job.json")
    if record is None:
        return None
    final = record["final"]
    return ("main job (`make run`)", f"`{record['command']}`",
            f"ShuffleNet 0.5x g=3, small-input stem, 15 epochs on the digits: **{final['eval_top1']:.2f}% top-1** "
            f"(450 test images), {final['train_seconds'] / 60:.1f} min of training, {final['wall_seconds'] / 60:.1f} "
            f"min in all", machine(record))


def train_step() -> tuple[str, str, str, str] | None:
    record = load("train_step.json")
    if record is None:
        return None
    parts = []
    for threads, rates in record["images_per_sec"].items():
        ours, plain = rates["ours, channels_last"], rates["plain, contiguous"]
        parts.append(f"{threads} thread{'s' if threads != '1' else ''}: ours {ours:.0f} images/s, plain {plain:.0f} "
                     f"(**{ours / plain:.2f}x**)")
    return ("training step, 32x32, batch 256", f"`{record['command']}`", "; ".join(parts), machine(record))


def table8() -> list[tuple[str, str, str, str]]:
    record = load("table8.json")
    if record is None:
        return []
    rows = []
    names = {"shufflenet_v1_x0_5_g3": "0.5x", "shufflenet_v1_x1_0_g3": "1x", "shufflenet_v1_x2_0_g3": "2x",
             "tv_alexnet": "AlexNet", "mobilenet_v1_x1_0": "MobileNet V1"}
    for backend, runtime in (("ort", "ONNX Runtime"), ("executorch", "ExecuTorch (XNNPACK)")):
        for threads in record["settings"]["threads"]:
            cells = {r["model"]: r for r in record["measurements"] if r["backend"] == backend
                     and r["threads"] == threads and r["resolution"] == [224, 224]}
            if not cells:
                continue
            latencies = ", ".join(f"{label} {cells[m]['median_ms']:.2f} ms" for m, label in names.items() if m in cells)
            half = cells.get("shufflenet_v1_x0_5_g3")
            speedup = (f"; 0.5x is **{half['speedup_vs_alexnet']:.1f}x** faster than AlexNet (paper 13x)"
                       if half and half["speedup_vs_alexnet"] else "")
            rows.append((f"Table 8, {runtime} fp32, 224x224, {threads} thread{'s' if threads > 1 else ''}",
                         f"`{record['command']}`", latencies + speedup, machine(record)))
    for key, runtime in (("int8_accuracy", "ONNX Runtime"), ("executorch_int8_accuracy", "ExecuTorch")):
        accuracy = record.get(key)
        if accuracy:
            rows.append((f"int8 accuracy change, {runtime}", f"`{record['command']}`",
                         f"{accuracy['model']} on {Path(accuracy['data']).name} test: "
                         f"{accuracy['fp32_top1']:.2f}% fp32 -> {accuracy['top1']:.2f}% int8 "
                         f"(**{accuracy['change']:+.2f} points**), {accuracy['agreement']:.2f}% top-1 agreement",
                         machine(record)))
    return rows


def simple(name: str, label: str, figure: Callable[[dict[str, Any]], str]) -> tuple[str, str, str, str] | None:
    record = load(name)
    return None if record is None else (label, f"`{record['command']}`", figure(record), machine(record))


def reproduce_row() -> tuple[str, str, str, str] | None:
    """The grids' row: how many cells at each ``--epochs``, the report's sentence on how the pairs' verdicts moved
    between the shortest and the longest grid, and the machines that ran them (each CPU with the date of its
    newest cell)."""
    folder = ROOT / "results" / "reproduce"
    cells = load_cells(folder) if folder.is_dir() else {}
    if not cells:
        return None
    per_grid = Counter(c["cell"]["epochs"] for c in cells.values())
    seeds = sorted({c["cell"]["seed"] for c in cells.values()})
    newest = {}
    for cell in sorted(cells.values(), key=lambda c: c["machine"]["date"]):
        newest[cell["machine"]["cpu"]] = cell
    counts = ", ".join(f"{per_grid[epochs]} cells at {epochs} epochs" for epochs in sorted(per_grid))
    verdict = ""
    if len(per_grid) > 1:
        tables = {table: table_rows(table) for table in TRAINING_TABLES}
        verdict = " " + scale_summary(tables, cells, len(seeds))
    return ("the paper's Tables 2-5 on CIFAR-10", "`shufflenet reproduce all --data-dir ... --no-md5-check`",
            f"{counts} (seeds {', '.join(map(str, seeds))}).{verdict} Tables, verdicts and plots: "
            f"[docs/reproduction.md](docs/reproduction.md)", "; ".join(machine(c) for c in newest.values()))


def pretrain_epochs(run: dict[str, Any]) -> int | None:
    """The epochs a detection run's backbone was pre-trained for, from the record of the training that made its
    weights (a reproduce grid cell or a backbone trained by benchmarks/detection_table.py); None from random."""
    weights = run["config"]["backbone_weights"]
    if weights is None:
        return None
    name = Path(weights).parent.name
    for record in (f"reproduce/{name}.json", f"detection/backbones/{name}.json"):
        if (data := load(record)) is not None:
            return data["config"]["epochs"]
    raise ValueError(f"no result file records the training of {weights}")


def detection_row() -> tuple[str, str, str, str] | None:
    folder = ROOT / "results" / "detection"
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    if not runs:
        return None
    best = max(runs, key=lambda r: r["map"])
    budgets = " ".join(sorted({f"{r['config']['time_budget']:g}" for r in runs}))
    epochs = " ".join(sorted({str(e) for r in runs if (e := pretrain_epochs(r)) is not None}))
    return ("detection (Faster R-CNN) on the raccoon photographs",
            f"`python benchmarks/detection_table.py --minutes {budgets} --pretrain-epochs {epochs}`",
            f"{len(runs)} runs; best mAP@[.5:.95] {best['map']:.2f}% ({best['backbone']}, shorter side "
            f"{best['min_size']}): [docs/detection.md](docs/detection.md)", machine(runs[-1]))


def measured_table() -> str:
    rows = [main_job(), training_row("cifar10_60min_alone.json", "CIFAR-10, 60 minutes, alone, whole batches"),
            training_row("cifar10_30min.json", "CIFAR-10, 30 minutes"), train_step(), *table8(),
            simple("channel_shuffle.json", "channel shuffle, native vs reshape-transpose",
                   lambda r: f"native / reshape time: {min(r['ratios']):.2f}-{max(r['ratios']):.2f} over every case"),
            simple("train_throughput.json", "training throughput, 224x224, batch 32",
                   lambda r: "; ".join(f"{name} {rate:.1f} images/s" for name, rate in r["images_per_sec"].items())),
            simple("grid_throughput.json", "reproduce grid throughput, same cells both ways",
                   lambda r: "; ".join(f"{way}: {rate:.0f} images/s" for way, rate in r["images_per_sec"].items())
                   + f" (**{r['speedup']:.2f}x**, target 1.8x; {len(r['models'])} cells of "
                     f"{r['epochs'] * r['steps_per_epoch']} steps)"),
            reproduce_row(), detection_row()]
    rows = [row for row in rows if row is not None]
    if not rows:
        return "(no result files yet)"
    lines = ["| what | command | figure | machine |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def updated_readme(text: str) -> str:
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{measured_table()}\n{END}{after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = updated_readme(text)
    if args.check:
        sys.exit(0 if new == text else 1)
    readme.write_text(new)
    print(measured_table())


if __name__ == "__main__":
    main()
