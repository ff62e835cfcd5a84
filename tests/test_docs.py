"""The README's and the docs' measured figures are what the committed result files say."""
import importlib.util
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from shufflenet.bench.latency import results_table
from shufflenet.bench.table8 import executorch_profile_text, find, runtime_rows, table8_rows, winner_rows
from shufflenet.experiments.report import (
    load_cells,
    row_errors,
    scale_comparison,
    scales_of,
    spread,
    table_markdown,
    verdicts,
)
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


def cell_at(record: dict, model: str, backend: str, threads: int) -> dict:
    """A Table 8 measurement at 224x224, batch 1."""
    return find(record["measurements"], model=model, backend=backend, threads=threads, resolution=(224, 224))


def ms_at(record: dict, model: str, backend: str, threads: int) -> float:
    return cell_at(record, model, backend, threads)["median_ms"]


def profile_cell(record: dict, runtime: str, precision: str, operator: str, column: int) -> str:
    """A cell of a per-operator profile table in the Table 8 record (columns: operator, nodes, us, share...)."""
    row = next(line for line in record[f"{runtime}_profile"][precision].splitlines()
               if line.split("|")[1].strip() == operator)
    return row.split("|")[column + 1].strip()


HALF, ONE, ALEXNET, MOBILENET = "shufflenet_v1_x0_5_g3", "shufflenet_v1_x1_0_g3", "tv_alexnet", "mobilenet_v1_x1_0"


def et_speedup(record: dict) -> float:
    return cell_at(record, HALF, "executorch", 1)["speedup_vs_alexnet"]


QUOTES += [("deploy.md", "table8.json", quoted) for quoted in (
    lambda r: f"({ms_at(r, HALF, 'executorch', 1):.2f} ms against ONNX Runtime's {ms_at(r, HALF, 'ort', 1):.2f} ms)",
    lambda r: f"a tie ({ms_at(r, ONE, 'executorch', 1):.2f} against {ms_at(r, ONE, 'ort', 1):.2f} ms)",
    lambda r: f"convs at {profile_cell(r, 'ort', 'fp32', 'pointwise conv, grouped', 5)} GMAC/s",
    lambda r: f"the transposes are {profile_cell(r, 'executorch', 'fp32', 'Transpose (ND, X32)', 2)} us, "
              f"{profile_cell(r, 'executorch', 'fp32', 'Transpose (ND, X32)', 3)} of the operator time, and the "
              f"IGEMMs {profile_cell(r, 'executorch', 'fp32', 'Convolution (NHWC, F32) IGEMM', 3)}",
    lambda r: f"runs in {ms_at(r, ONE, 'executorch-int8', 1):.2f} ms against ONNX Runtime's "
              f"{ms_at(r, ONE, 'ort-int8', 1):.2f} ms",
    lambda r: f"(ONNX Runtime wins by "
              f"{ms_at(r, ALEXNET, 'executorch-int8', 1) / ms_at(r, ALEXNET, 'ort-int8', 1):.2f}x)",
    lambda r: f"(0.5x g=3: {ms_at(r, HALF, 'ort', 2):.2f} ms against {ms_at(r, HALF, 'ort', 1):.2f} at 1 thread)",
    lambda r: f"XNNPACK splits ShuffleNet 0.5x well ({ms_at(r, HALF, 'executorch', 2):.2f} ms)",
    lambda r: f"({ms_at(r, ONE, 'executorch', 2):.2f} and {ms_at(r, MOBILENET, 'executorch', 2):.2f} ms)",
    lambda r: f"**{et_speedup(r):.2f}x** faster than AlexNet on ExecuTorch fp32",
    lambda r: f"missed by {100 * (1 - et_speedup(r) / 15):.0f}%",
    lambda r: f"AlexNet takes {ms_at(r, ALEXNET, 'executorch', 1):.2f} ms there, so 0.5x would need "
              f"{ms_at(r, ALEXNET, 'executorch', 1) / 15:.2f} ms",
    lambda r: f"runs at {cell_at(r, ONE, 'executorch', 1)['latency_over_bound']:.2f}x its fp32 compute bound",
    lambda r: f"int8 is **{ms_at(r, ONE, 'executorch', 1) / ms_at(r, ONE, 'executorch-int8', 1):.2f}x** faster",
    lambda r: f"missed by {100 * (1 - ms_at(r, ONE, 'executorch', 1) / ms_at(r, ONE, 'executorch-int8', 1) / 2):.1f}% "
              f"at 1 thread",
    lambda r: f"At 2 threads it is {ms_at(r, ONE, 'executorch', 2) / ms_at(r, ONE, 'executorch-int8', 2):.2f}x",
    lambda r: f"the transposes take {profile_cell(r, 'executorch', 'int8', 'Transpose (ND, X8)', 3)} and the int8 "
              f"residual adds {profile_cell(r, 'executorch', 'int8', 'Add (ND)', 3)}",
    lambda r: f"The int8 top-1 drop is {-r['executorch_int8_accuracy']['change']:.2f} points",
    lambda r: f"{r['executorch_int8_accuracy']['images']:,} test images: "
              f"{r['executorch_int8_accuracy']['fp32_top1']:.2f}% -> {r['executorch_int8_accuracy']['top1']:.2f}%",
    lambda r: f"ONNX Runtime's int8 loses {-r['int8_accuracy']['change']:.2f} points on the same weights",
    lambda r: f"that took {r['settings']['minutes']} minutes",
)]


def cells_at(epochs: int) -> tuple[dict[str, dict], int]:
    """The committed cell results of the ``epochs`` grid, and its number of seeds."""
    cells = {name: cell for name, cell in load_cells(ROOT / "results" / "reproduce").items()
             if cell["cell"]["epochs"] == epochs}
    return cells, len({cell["cell"]["seed"] for cell in cells.values()})


def pair_values(table: str, epochs: int, pairs: slice = slice(None)) -> list[float]:
    """Our differences of ``table``'s pairs at ``epochs`` (mean over the seeds)."""
    cells, seeds = cells_at(epochs)
    return [v["ours"] for v in verdicts(table_rows(table), cells, epochs, seeds)[pairs]]


def pair_differences(table: str, epochs: int, pairs: slice = slice(None)) -> str:
    """``pair_values`` as the discussion writes them: "a / b / ..."."""
    return " / ".join(f"{value:.2f}" for value in pair_values(table, epochs, pairs))


def row_mean(table: str, label: str, epochs: int) -> str:
    cells, seeds = cells_at(epochs)
    row = next(r for r in table_rows(table) if r.label == label)
    return f"{statistics.mean(row_errors(row, cells, epochs, seeds)):.2f}%"


def pair_spreads(table: str, epochs: int, pairs: slice = slice(None)) -> str:
    """The seed spreads of ``table``'s pairs at ``epochs``, as the discussion writes them: "a / b / ..."."""
    cells, seeds = cells_at(epochs)
    return " / ".join(f"{v['spread']:.2f}" for v in verdicts(table_rows(table), cells, epochs, seeds)[pairs])


def seed_spreads(epochs: int) -> str:
    """How far apart the seeds of one model end at ``epochs``, over every model: range and median."""
    cells, _ = cells_at(epochs)
    errors = defaultdict(list)
    for cell in cells.values():
        errors[cell["cell"]["key"]].append(cell["top1_err"])
    ranges = [r for e in errors.values() if (r := spread(e)) is not None]
    return f"{min(ranges):.2f} to {max(ranges):.2f} points apart, median {statistics.median(ranges):.2f}"


def training_time(epochs: int) -> str:
    """The cells of the ``epochs`` grid and their training time by their own clocks."""
    cells, _ = cells_at(epochs)
    seconds = sum(cell["train_seconds"] for cell in cells.values())
    return f"{len(cells)} cells, {seconds / 3600:.1f} hours of training"


def decided(epochs: int) -> str:
    cells, seeds = cells_at(epochs)
    every = [v for table in TRAINING_TABLES for v in verdicts(table_rows(table), cells, epochs, seeds)]
    return f"{sum(v['decides'] for v in every)} of the {len(every)} pairs decide at {epochs} epochs"


# Figures of docs/reproduction.md's hand-written discussion, from the cell results of both scales.
REPRODUCTION_QUOTES = [
    lambda: f"({training_time(10)} by the cells' own clocks",
    lambda: f"({training_time(2)} on 2026-11-30)",
    lambda: f"At 10 epochs the seeds of a model end {seed_spreads(10)} (at 2 epochs {seed_spreads(2)})",
    lambda: f"{decided(2)} and {decided(10)}",
    lambda: f"g = 3 / 4 / 8 beat g = 1 by {pair_differences('table2', 10, slice(0, 3))} points (seed spreads "
            f"{pair_spreads('table2', 10, slice(0, 3))}; at 2 epochs {pair_differences('table2', 2, slice(0, 3))}",
    lambda: f"g = 3 / 8 beat g = 1 by {pair_differences('table2', 10, slice(3, 5))} points (at 2 epochs "
            f"{pair_differences('table2', 2, slice(3, 5))}",
    lambda: " -> ".join(row_mean('table2', f"ShuffleNet 0.25x, g = {g}", 10) for g in (1, 3, 8)) + " for g = 1 / 3 / 8",
    lambda: f"the shuffle lowers the error by {pair_differences('table3', 10, slice(0, 2))} points at 0.5x (g = 3 / "
            f"8) and {pair_differences('table3', 10, slice(2, 4))} at 0.25x",
    lambda: f"At 2 epochs it was {pair_differences('table3', 2)} points",
    lambda: f"{pair_differences('table4', 10, slice(0, 4))} points at 38 MFLOPs (against VGG-like / ResNet / "
            f"Xception-like / ResNeXt) and {pair_differences('table4', 10, slice(4, 8))} at 13 MFLOPs",
    lambda: f"(at 2 epochs {pair_differences('table4', 2, slice(0, 4))} and "
            f"{pair_differences('table4', 2, slice(4, 8))};",
    lambda: f"ResNeXt at 38 MFLOPs: {pair_differences('table4', 10, slice(3, 4))} points behind ShuffleNet with a seed "
            f"spread of {pair_spreads('table4', 10, slice(3, 4))}",
    lambda: f"({row_mean('table4', 'VGG-like (38 MFLOPs)', 2)} -> {row_mean('table4', 'VGG-like (38 MFLOPs)', 10)} "
            f"error at 38 MFLOPs)",
    lambda: f"the margins shrank from {pair_differences('table5', 2)} points at 2 epochs to "
            f"{pair_differences('table5', 10)}",
]


def program(record: dict, name: str, threads: int) -> dict:
    return record["programs"][name][str(threads)]


def program_ms(record: dict, name: str, threads: int) -> float:
    return program(record, name, threads)["program_ms"]


def operator_us(record: dict, name: str, threads: int) -> float:
    """The summed time of the program's operators."""
    return sum(program(record, name, threads)["operator_us"].values())


def program_speedup(record: dict, name: str) -> str:
    return f"{program_ms(record, name, 1) / program_ms(record, name, 2):.2f}x"


def round_range(record: dict, name: str) -> str:
    ratios = [a / b for a, b in zip(program(record, name, 1)["program_ms_per_round"],
                                    program(record, name, 2)["program_ms_per_round"])]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def kind_speedup(record: dict, name: str, kind: str) -> str:
    return f"{program(record, name, 1)['operator_us'][kind] / program(record, name, 2)['operator_us'][kind]:.2f}x"


def work_speedups(record: dict) -> str:
    """The range of the convolutions' and classifier's speed-ups over every program."""
    ratios = [figures["1"]["operator_us"][kind] / figures["2"]["operator_us"][kind]
              for figures in record["programs"].values() for kind in figures["nodes"]
              if kind.startswith(("Convolution", "Fully Connected"))]
    return f"({min(ratios):.2f}x to {max(ratios):.2f}x in the"


HALF32, ONE32, ONE8, MOBILE32 = (f"{HALF} fp32", f"{ONE} fp32", f"{ONE} int8", f"{MOBILENET} fp32")
QUOTES += [("deploy.md", "executorch_threads.json", quoted) for quoted in (
    lambda r: f"median of 5 rounds ({program_speedup(r, ONE32)} and {program_speedup(r, MOBILE32)})",
    lambda r: f"range over {round_range(r, ONE32)} and {round_range(r, MOBILE32)} on this",
    lambda r: f"Side by side at 2 threads it is {program_ms(r, ONE32, 2) / program_ms(r, ONE8, 2):.2f}x "
              f"({program_ms(r, ONE32, 2):.2f} against {program_ms(r, ONE8, 2):.2f} ms)",
    work_speedups,
    lambda r: f"in fp32 ({kind_speedup(r, HALF32, 'Transpose (ND, X32)')} and "
              f"{kind_speedup(r, ONE32, 'Transpose (ND, X32)')}) and gain "
              f"{kind_speedup(r, ONE8, 'Transpose (ND, X8)')}",
    lambda r: f"lost in the median ({program_speedup(r, HALF32)})",
    lambda r: f"less on 2 threads ({operator_us(r, HALF32, 1) / operator_us(r, HALF32, 2):.2f}x)",
    lambda r: f"each of its {sum(r['programs'][HALF32]['nodes'].values())} operators",
    lambda r: f"round to round ({round_range(r, HALF32)})",
    lambda r: f"run alone ({r['machine']['cpu']}, {r['machine']['logical_cpus']} cores)",
)]


def assert_says(page: str, expected: str, source: str) -> None:
    """``docs/page`` holds ``expected``, line breaks and runs of spaces aside."""
    assert " ".join(expected.split()) in " ".join(doc(page).split()), (
        f"docs/{page} should say {expected!r} (from {source})")


@pytest.mark.parametrize("quoted", REPRODUCTION_QUOTES)
def test_reproduction_discussion_quotes_the_cells(quoted):
    assert_says("reproduction.md", quoted(), "results/reproduce")


@pytest.mark.parametrize("page,name,quoted", QUOTES)
def test_docs_quote_the_result_files(page, name, quoted):
    assert_says(page, quoted(result(name)), f"results/{name}")


def test_generated_docs_tables_are_the_result_files():
    """The tables of the generated pages, rebuilt from the result files by the code that wrote them."""
    table8 = result("table8.json")
    resolutions = [tuple(r) for r in table8["settings"]["resolutions"]]
    page = doc("table8.md")
    assert table8_rows(table8["measurements"], resolutions) in page and results_table(table8) in page
    assert runtime_rows(table8["measurements"], table8["settings"]["threads"]) in page
    assert winner_rows(table8["measurements"], table8["settings"]["threads"]) in page
    assert executorch_profile_text(table8) in page
    threads = load_script("executorch_threads")
    assert threads.threads_table(result("executorch_threads.json")) in doc("deploy.md")
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
