"""The README's and the docs' measured figures are what the committed result files say."""
import importlib.util
import json
import re
import statistics
from pathlib import Path

import pytest

from shufflenet.bench.latency import results_table
from shufflenet.bench.table8 import table8_rows
from shufflenet.experiments.report import load_cells, scale_comparison, scales_of, table_markdown
from shufflenet.experiments.tables import TRAINING_TABLES, table_rows

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(name: str) -> dict:
    return json.loads((ROOT / "results" / name).read_text())


def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def test_readme_measured_table_is_generated_from_the_result_files():
    module = load_script("readme_tables")
    text = (ROOT / "README.md").read_text()
    assert module.updated_readme(text) == text, "run `python benchmarks/readme_tables.py` after adding results"
    assert (ROOT / "results").is_dir() and module.measured_table() != "(no result files yet)"


def test_main_job_result_is_what_make_run_does():
    """The README row's command (from results/main_job.json) is `make run`'s training command, recorded."""
    makefile = (ROOT / "Makefile").read_text()
    train = re.search(r"^run:.*\n\t\$\(BIN\)/(shufflenet train .*)$", makefile, re.M).group(1)
    assert result("main_job.json")["command"] == f"{train} --record results/main_job.json"


def median_rate(record: dict) -> float:
    rows = record["metrics"]
    return statistics.median(r["images_per_sec"] for r in rows[1:] or rows)


def step_rates(record: dict, kind: str, ratio: bool) -> str:
    """A row of docs/fast-training.md's training-step table: images/s on 1 and 2 threads (with the ratio to the
    plain yardstick where ``ratio``)."""
    cells = []
    for threads in ("1", "2"):
        rates = record["images_per_sec"][threads]
        cells.append(f"{rates[kind]:.0f}" + (f" ({rates[kind] / rates['plain, contiguous']:.2f}x plain)" * ratio))
    return f"| {cells[0]} | {cells[1]} |"


def augment_times(record: dict) -> str:
    rates, batch = record["images_per_sec"]["2"], record["batch"]
    ours, theirs = rates["data: augment one batch (TensorBatches)"], rates["data: one batch, per-image torchvision "
                                                                             "transforms"]
    return (f"about {batch / ours * 1000:.0f} ms ({round(ours, -2):,.0f} images/s on 2 threads) against "
            f"{batch / theirs * 1000:.0f} ms")


def first_above(record: dict, target: float) -> str:
    row = next(m for m in record["metrics"] if (m.get("eval_top1") or 0) >= target)
    return f"{target}% at its evaluation of epoch {row['epoch']} ({row['wall_seconds'] / 60:.1f} minutes)"


# Figures quoted by hand-written docs: (doc, result file, the text the figure must appear as, from the record).
QUOTES = [
    ("fast-training.md", "cifar10_60min_alone.json", lambda r: f"**{r['final']['eval_top1']:.2f}% top-1 after"),
    ("fast-training.md", "cifar10_60min_alone.json", lambda r: f"{r['final']['eval_tta_top1']:.2f}% with mirror"),
    ("fast-training.md", "cifar10_60min_alone.json",
     lambda r: f"{r['final']['wall_seconds'] / 60:.1f} minutes of wall-clock time in all\n  ({r['final']['epoch']} "
               f"epochs, {median_rate(r):.0f} images/s median epoch)"),
    ("fast-training.md", "cifar10_60min_alone.json",
     lambda r: f"+{r['final']['eval_tta_top1'] - r['final']['eval_top1']:.2f} points ({r['final']['eval_top1']:.2f}% "
               f"->\n  {r['final']['eval_tta_top1']:.2f}%)"),
    ("fast-training.md", "cifar10_60min_alone.json", lambda r: first_above(r, 88.7)),
    ("fast-training.md", "cifar10_60min_alone.json", lambda r: f"({median_rate(r):.0f} images/s, on a quiet"),
    ("fast-training.md", "cifar10_30min.json",
     lambda r: f"**{r['final']['eval_top1']:.2f}% after the last epoch, {r['final']['eval_tta_top1']:.2f}% with\n  "
               f"TTA** in {r['final']['wall_seconds'] / 60:.1f} minutes ({r['final']['epoch']} epochs)"),
    ("fast-training.md", "cifar10_30min.json", lambda r: f"({median_rate(r):.0f} images/s per median epoch)"),
    ("fast-training.md", "train_step.json", augment_times),
    *[("fast-training.md", "train_step.json", lambda r, kind=kind, ratio=ratio: step_rates(r, kind, ratio))
      for kind, ratio in (("plain, contiguous", False), ("ours, contiguous", False), ("ours, channels_last", True),
                          ("ours, channels_last, bf16 autocast", False), ("ours, channels_last, torch.compile", True))],
]


def grid_speedup(record: dict) -> str:
    (before,), (now,) = record["ways"].values()
    return (f"{before['seconds']:.0f} s one cell at a time on 2 threads against {now['seconds']:.0f} s on Ray, "
            f"**{record['speedup']:.2f}x**")


def grid_ideal(record: dict) -> str:
    """Two cells at once, each at its own one-thread speed, against one cell at a time on two threads."""
    (before,), (now,) = record["ways"].values()
    seconds = [sum(cell["train_seconds"] for cell in way["cells"].values()) for way in (before, now)]
    return f"at most {2 * seconds[0] / seconds[1]:.2f}x"


QUOTES += [("reproduction.md", "grid_throughput.json", grid_speedup),
           ("reproduction.md", "grid_throughput.json", grid_ideal)]


@pytest.mark.parametrize("page,name,quoted", QUOTES)
def test_docs_quote_the_result_files(page, name, quoted):
    expected = quoted(result(name))
    assert expected in doc(page), f"docs/{page} should say {expected!r} (from results/{name})"


def test_generated_docs_tables_are_the_result_files():
    """The tables of the generated pages, rebuilt from the result files by the code that wrote them."""
    table8 = result("table8.json")
    resolutions = [tuple(r) for r in table8["settings"]["resolutions"]]
    page = doc("table8.md")
    assert table8_rows(table8["measurements"], resolutions) in page and results_table(table8) in page
    cells = load_cells(ROOT / "results" / "reproduce")
    seeds = {epochs: len({c["cell"]["seed"] for c in cells.values() if c["cell"]["epochs"] == epochs})
             for epochs in scales_of(cells)}
    page = doc("reproduction.md")
    shown = [epochs for epochs in seeds if all(table_markdown(table_rows(table), cells, epochs, seeds[epochs]) in page
                                               for table in TRAINING_TABLES)]
    assert len(shown) == 1, f"the page's tables should be those of one --epochs, found {shown}"
    if len(seeds) > 1:  # a second scale: every pair at both, with the seeds of the page's tables
        tables = {table: table_rows(table) for table in TRAINING_TABLES}
        assert scale_comparison(tables, cells, seeds[shown[0]]) in page
    detection = load_script("detection_table")
    records = [json.loads(p.read_text()) for p in sorted((ROOT / "results" / "detection").glob("*.json"))]
    assert detection.results_table(records) in doc("detection.md")
