"""ShuffleNet Table 8 on this CPU: latency beside complexity, against AlexNet, with the deployment targets
(``shufflenet reproduce table8``).

One process measures, in this order: the fp32 GEMM compute bound (1 and 2 threads); every model of Table 8 and
the references (``shufflenet.benchmark.DEFAULT_MODELS``) at 224x224, 480x640 and 720x1280, 1 and 2 threads,
batch 1, on PyTorch eager, PyTorch optimised (BN folded + channels_last), ONNX Runtime fp32 and int8; plus
ONNX Runtime without our graph rewrite for the ShuffleNets, ``torch.compile`` at 224 on 1 thread, and a plain
straightforward eager ShuffleNet 1x g=3 (``plain_shufflenet``); ExecuTorch (XNNPACK) fp32 and int8 for every
model at 224x224; then the per-operator profiles of ShuffleNet 1x g=3 (fp32 and int8) in ONNX Runtime and in
ExecuTorch; with trained weights, the int8 accuracy change of the ONNX and the ExecuTorch int8 files.
``render_table8`` writes docs/table8.md and its plots from the result record.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..data.sources import batches, open_folder
from ..deploy.executorch import export_executorch
from ..deploy.export import export_onnx
from ..deploy.int8 import calibration_images, export_int8_onnx, quantize_onnx
from ..factory import load
from ..io.atomic import atomic_output
from ..paper.published import TABLE8_LATENCY_MS, TABLE8_RESOLUTIONS
from ..text_table import format_table
from .latency import DEFAULT_BACKENDS, DEFAULT_MODELS, SPEED_REFERENCE, results_table, run_benchmark
from .ort_profile import profile_onnx
from .plain_shufflenet import PlainShuffleNet
from .plots import plot_results
from .pte_profile import profile_pte

PLAIN = "plain_shufflenet_v1_x1_0_g3"  # eager yardstick
PROFILED = "shufflenet_v1_x1_0_g3"
THREADS = (1, 2)
EXECUTORCH = ("executorch", "executorch-int8")


def keep(name: str, backend: str, resolution: tuple[int, int], threads: int) -> bool:
    """Which cells the full run measures (all of DEFAULT_BACKENDS everywhere, the rest where they inform)."""
    if name == PLAIN:
        return backend == "eager"
    if backend == "eager-compile":
        return resolution == (224, 224) and threads == 1
    if backend == "ort-plain":
        return name.startswith("shufflenet_v1") and threads == 1
    if backend in EXECUTORCH:
        return resolution == (224, 224) and name != PLAIN
    return True


def find(records: list[dict], **match: Any) -> dict | None:
    for r in records:
        if all((list(v) if isinstance(v, tuple) else v) == r[k] for k, v in match.items()):
            return r
    return None


def ms(record: dict | None) -> float | None:
    return None if record is None else round(record["median_ms"], 2)


def table8_rows(records: list[dict], resolutions: list[tuple[int, int]]) -> str:
    """Our ORT fp32 single-thread latencies beside the paper's, and both speedups over AlexNet."""
    rows = []
    for name, (paper_mflops, paper_ms) in TABLE8_LATENCY_MS.items():
        ours = [find(records, model=name, backend="ort", threads=1, resolution=res) for res in resolutions]
        if ours[0] is None:
            continue
        paper_alexnet = TABLE8_LATENCY_MS[SPEED_REFERENCE][1]
        cells: list[Any] = [name, paper_mflops, round(ours[0]["mflops"], 1)]
        for index, res in enumerate(resolutions):
            column = TABLE8_RESOLUTIONS.index(res) if res in TABLE8_RESOLUTIONS else None
            cells += [None if column is None else paper_ms[column], ms(ours[index])]
        column = 0 if resolutions[0] == (224, 224) else None
        cells += [None if column is None else round(paper_alexnet[0] / paper_ms[0], 1),
                  round(ours[0]["speedup_vs_alexnet"], 1) if ours[0]["speedup_vs_alexnet"] else None,
                  round(ours[0]["theoretical_speedup"], 1) if ours[0]["theoretical_speedup"] else None]
        rows.append(cells)
    headers = ["model", "paper MFLOPs", "our MFLOPs"]
    for res in resolutions:
        headers += [f"paper ms {res[0]}x{res[1]}", f"ours ms {res[0]}x{res[1]}"]
    first = f"{resolutions[0][0]}x{resolutions[0][1]}"
    headers += [f"paper speedup vs AlexNet ({first})", f"our speedup ({first})", "theoretical (ours)"]
    return format_table(headers, rows)


def int8_accuracy(weights: str, data: str, check_md5: bool = True) -> dict[str, dict[str, Any]]:
    """Per runtime ("onnx", "executorch"): top-1 of the fp32 and int8 files of trained weights (the model their
    file records), made as `shufflenet export --int8` makes them (ONNX: equalized), on the labelled set ``data``
    (calibrated on its train split, evaluated on its test split)."""
    loaded = load(weights)
    recorded = loaded.preprocessing
    calibration = calibration_images(data, recorded, 256, check_md5=check_md5)
    test_set, _ = open_folder(data, "test", recorded.transform(), class_names=loaded.class_names, check_md5=check_md5)
    with tempfile.TemporaryDirectory() as scratch:
        _, onnx_scores = export_int8_onnx(loaded.model, Path(scratch) / "int8.onnx", recorded.crop, calibration,
                                          evaluation=batches(test_set))
        executorch_scores = export_executorch(loaded.model, Path(scratch) / "int8.pte", recorded.crop,
                                              calibration=calibration, evaluation=batches(test_set)).scores
    return {runtime: {"model": loaded.name, "weights": weights, "data": data, **scores["int8"],
                      "fp32_top1": scores["fp32"]["top1"], "change": scores["int8"]["top1"] - scores["fp32"]["top1"]}
            for runtime, scores in (("onnx", onnx_scores), ("executorch", executorch_scores))}


def targets(records: list[dict], threads: int, accuracy: dict[str, Any] | None,
            executorch_accuracy: dict[str, Any] | None = None) -> str:
    """The deployment targets at 224, batch 1, with ``threads`` threads: value, goal, met or not; per runtime
    (ONNX Runtime's goals, then ExecuTorch's, issue 21's on one runtime)."""
    at = {"resolution": (224, 224), "threads": threads}
    eager = find(records, model=PROFILED, backend="eager", **at)
    plain = find(records, model=PLAIN, backend="eager", **at)
    rows = []

    def add(what: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append((what, None if value is None else round(value, 2), goal,
                     "n/a" if met is None else ("yes" if met else "no")))

    runtimes = [("ORT", "ort", "ort-int8", accuracy, (13, 1.25, 2, 1))]
    if any(r["backend"] in EXECUTORCH for r in records):
        runtimes.append(("ExecuTorch", "executorch", "executorch-int8", executorch_accuracy, (15, 1.6, 2, 0.5)))
    for runtime, fp32, int8, drop_of, (speed_goal, bound_goal, int8_goal, drop_goal) in runtimes:
        half = find(records, model="shufflenet_v1_x0_5_g3", backend=fp32, **at)
        one = find(records, model=PROFILED, backend=fp32, **at)
        one_int8 = find(records, model=PROFILED, backend=int8, **at)
        speedup = half and half["speedup_vs_alexnet"]
        add(f"ShuffleNet 0.5x g=3, {runtime} fp32: speedup over AlexNet ({runtime} fp32)", speedup,
            f">= {speed_goal}", None if speedup is None else speedup >= speed_goal)
        ratio = one and one["latency_over_bound"]
        add(f"ShuffleNet 1x g=3, {runtime} fp32: latency / compute bound", ratio, f"<= {bound_goal}",
            None if ratio is None else ratio <= bound_goal)
        speed = one and one_int8 and one["median_ms"] / one_int8["median_ms"]
        add(f"ShuffleNet 1x g=3: {runtime} fp32 latency / {runtime} int8 latency", speed, f">= {int8_goal}",
            None if not speed else speed >= int8_goal)
        drop = None if drop_of is None else -drop_of["change"]
        add(f"{runtime} int8: top-1 drop (points){'' if drop_of is None else ', ' + drop_of['model']}", drop,
            f"<= {drop_goal}", None if drop is None else drop <= drop_goal)
    eager_ratio = eager and plain and eager["median_ms"] / plain["median_ms"]
    add("ShuffleNet 1x g=3 eager: ours / plain implementation", eager_ratio, "<= 1",
        None if not eager_ratio else eager_ratio <= 1)
    return format_table(("target", "measured", "goal", "met"), rows)


def runtime_rows(records: list[dict], threads: list[int], resolution: tuple[int, int] = (224, 224)) -> str:
    """Per model at ``resolution``: ONNX Runtime and ExecuTorch (XNNPACK), fp32 and int8, at each thread count,
    beside the fp32 compute bound (ms)."""
    columns = [(backend, t) for backend in ("ort", "ort-int8", *EXECUTORCH) for t in threads]
    rows = []
    for name in DEFAULT_MODELS:
        cells = [find(records, model=name, backend=b, threads=t, resolution=resolution) for b, t in columns]
        if not any(cells):
            continue
        bound = [find(records, model=name, backend="ort", threads=t, resolution=resolution) for t in threads]
        rows.append([name, *(ms(c) for c in cells),
                     *(None if b is None else round(b["bound_ms"], 2) for b in bound)])
    headers = [f"{b} ms {t}t" for b, t in columns] + [f"fp32 bound ms {t}t" for t in threads]
    return format_table(["model", *headers], rows)


def winner_rows(records: list[dict], threads: list[int], resolution: tuple[int, int] = (224, 224)) -> str:
    """Per model at ``resolution``: the faster runtime in fp32 and in int8 at each thread count, and by how much
    (ONNX Runtime's latency over ExecuTorch's: above 1, ExecuTorch wins)."""
    pairs = [(precision, t) for precision in ("fp32", "int8") for t in threads]
    rows = []
    for name in DEFAULT_MODELS:
        cells = []
        for precision, t in pairs:
            suffix = "" if precision == "fp32" else "-int8"
            ort, executorch = (find(records, model=name, backend=b + suffix, threads=t, resolution=resolution)
                               for b in ("ort", "executorch"))
            ratio = ort and executorch and ort["median_ms"] / executorch["median_ms"]
            cells.append(None if not ratio else f"{'ExecuTorch' if ratio > 1 else 'ORT'} {max(ratio, 1 / ratio):.2f}x")
        if any(cells):
            rows.append([name, *cells])
    return format_table(["model", *(f"{precision} {t}t" for precision, t in pairs)], rows)


def profile_table(rows: list[dict[str, Any]]) -> str:
    """A per-operator profile as a table; the multiply-add columns only where the profiler gives them."""
    rates = any("mmacs" in r for r in rows)
    return format_table(("operator", "nodes", "us / run", "share", *(("MMACs", "GMAC/s") if rates else ())),
                        [(r["kind"], r["nodes"], round(r["us"], 1), f"{100 * r['share']:.1f}%",
                          *((round(r["mmacs"], 2) if "mmacs" in r else None,
                             round(r["gmacs_per_s"], 1) if "gmacs_per_s" in r else None) if rates else ()))
                         for r in rows])


def profile_tables(resolution: tuple[int, int]) -> dict[str, dict[str, str]]:
    """Per-operator profiles of ShuffleNet 1x g=3 at 1 thread, fp32 and int8, per runtime: ONNX Runtime (our
    export and its QDQ int8 version) and ExecuTorch (our XNNPACK .pte files)."""
    model = load(PROFILED).model
    calibration = torch.randn(8, 3, *resolution)
    shape = (1, 3, *resolution)
    tables: dict[str, dict[str, str]] = {"ort": {}, "executorch": {}}
    with tempfile.TemporaryDirectory() as scratch:
        onnx_fp32, onnx_int8 = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        export_onnx(model, onnx_fp32, resolution)
        quantize_onnx(onnx_fp32, onnx_int8, calibration)
        for precision, path in (("fp32", onnx_fp32), ("int8", onnx_int8)):
            tables["ort"][precision] = profile_table(profile_onnx(path, shape))
        for precision, images in (("fp32", None), ("int8", calibration)):
            path = Path(scratch) / f"{precision}.pte"
            export_executorch(model, path, resolution, calibration=images)
            tables["executorch"][precision] = profile_table(profile_pte(path, shape))
    return tables


def measure_table8(quick: bool = False, int8_weights: str | None = None, int8_data: str | None = None,
                   check_md5: bool = True) -> dict[str, Any]:
    """Every Table 8 measurement (module docstring), as a result record's figures; the int8 accuracy first, so
    that a problem with the weights or the data ends the run before the long part."""
    accuracy = int8_accuracy(int8_weights, int8_data, check_md5) if int8_weights and int8_data else {}
    resolutions = [(224, 224)] if quick else list(TABLE8_RESOLUTIONS)
    threads = (1,) if quick else THREADS
    started = time.time()
    models = {name: load(name).model for name in DEFAULT_MODELS}
    models[PLAIN] = PlainShuffleNet(models[PROFILED])
    backends = list(DEFAULT_BACKENDS) + ["ort-plain", *EXECUTORCH] + ([] if quick else ["eager-compile"])
    result = run_benchmark(models, backends, resolutions, threads, batch=1, repeats=5 if quick else 25,
                           warmup=2 if quick else 3, max_seconds=1.0 if quick else 2.5, only=keep)
    profiles = profile_tables((224, 224))
    result["ort_profile"] = {"model": PROFILED, **profiles["ort"]}
    result["executorch_profile"] = {"model": PROFILED, **profiles["executorch"]}
    result["int8_accuracy"] = accuracy.get("onnx")
    result["executorch_int8_accuracy"] = accuracy.get("executorch")
    from importlib.metadata import version

    result["settings"].update(quick=quick, resolutions=[list(r) for r in resolutions], threads=list(threads),
                              minutes=round((time.time() - started) / 60, 1), executorch=version("executorch"))
    return result


def executorch_profile_text(record: dict[str, Any]) -> str:
    """ExecuTorch's per-operator profile section (records measured before it was added have none)."""
    profile = record.get("executorch_profile")
    if not profile:
        return ""
    return f"""
## Where ExecuTorch (XNNPACK) spends the time: ShuffleNet 1x g=3, 224x224, 1 thread

XNNPACK's own operator names (ETDump events, read by ExecuTorch's Inspector); a 1x1 convolution, grouped or
dense, runs as an IGEMM or GEMM, a depthwise one as a DWConv, and the transposes are layout changes XNNPACK
puts around each channel shuffle.

fp32:

{profile['fp32']}

int8 (PT2E, per-channel weights):

{profile['int8']}
"""


def render_table8(record: dict[str, Any], docs: str | Path, json_name: str) -> str:
    """docs/table8.md and the PNG plots under docs/table8/, generated from a Table 8 result record."""
    docs = Path(docs)
    settings, machine, records = record["settings"], record["machine"], record["measurements"]
    resolutions = [tuple(r) for r in settings["resolutions"]]
    plots = [path for res in resolutions for t in settings["threads"]
             for path in plot_results(record, docs / "table8", res, t)]
    accuracy, executorch_accuracy = record.get("int8_accuracy"), record.get("executorch_int8_accuracy")
    bound = ", ".join(f"{t} thread(s) {b['gmacs_best']:.1f} GMAC/s (median {b['gmacs_median']:.1f})"
                      for t, b in record["compute_bound"].items())
    targets_text = "\n\n".join(
        f"{t} thread{'s' if t > 1 else ''}:\n\n{targets(records, t, accuracy, executorch_accuracy)}"
        for t in settings["threads"])
    executorch_text = ""
    if any(r["backend"] in EXECUTORCH for r in records):
        executorch_text = f"""## ExecuTorch (XNNPACK) beside ONNX Runtime (224x224, batch 1, ms)

ExecuTorch {settings.get('executorch', '')}: our .pte files, every operator delegated to XNNPACK, int8 by PT2E with
the XNNPACK quantizer (per-channel weights), the runtime's threadpool set to the thread count. The fp32 compute
bound is the GEMM bound above.

{runtime_rows(records, settings['threads'])}

The faster runtime per model, and by how much (the slower one's latency over the faster one's):

{winner_rows(records, settings['threads'])}

"""
    text = f"""# ShuffleNet Table 8 on this CPU (generated)

Generated from `{json_name}`, measured by `{record['command']}` on {machine['date']} in {settings['minutes']} minutes
({machine['cpu']}, {machine['logical_cpus']} logical CPUs, flags {' '.join(machine['cpu_flags'])}; torch
{machine['torch']}, onnxruntime {machine['onnxruntime']}). Latency = median of up to {settings['repeats']} runs after
{settings['warmup']} warm-up runs, batch 1, random weights. fp32 compute bound (GEMM
{record['compute_bound']['1']['size']}^3): {bound}. Method and discussion: [deploy.md](deploy.md).

## Table 8 beside the paper (ONNX Runtime fp32, 1 thread; paper: Snapdragon 820, 1 thread)

{table8_rows(records, resolutions)}

{executorch_text}## Targets (224x224, batch 1)

{targets_text}

## Where ONNX Runtime spends the time: ShuffleNet 1x g=3, 224x224, 1 thread

fp32 (our export):

{record['ort_profile']['fp32']}

int8 (QDQ, per-channel):

{record['ort_profile']['int8']}
{executorch_profile_text(record)}
## Every measurement

{results_table(record)}

## Plots

""" + "\n".join(f"![{p.stem}](table8/{p.name})" for p in plots) + "\n"
    with atomic_output(docs / "table8.md") as temporary:
        temporary.write_text(text)
    return text
