"""ShuffleNet Table 8 on this CPU: latency beside complexity, against AlexNet, with the issue 5 targets.

    PYTHONPATH=src python benchmarks/table8.py            # full run, about 15-18 minutes on 2 idle cores
    PYTHONPATH=src python benchmarks/table8.py --quick    # 224 only, 1 thread, few repeats: a smoke test
    ... [--int8-weights W.safetensors [--int8-model NAME] [--int8-data DIR]]   # also the int8 accuracy target

One process measures, in this order: the fp32 GEMM compute bound (1 and 2 threads); every model of Table 8 and
the references (``shufflenet.benchmark.DEFAULT_MODELS``) at 224x224, 480x640 and 720x1280, 1 and 2 threads,
batch 1, on PyTorch eager, PyTorch optimised (BN folded + channels_last), ONNX Runtime fp32 and int8; plus
ONNX Runtime without our graph rewrite for the ShuffleNets, ``torch.compile`` at 224 on 1 thread, and a plain
straightforward eager ShuffleNet 1x g=3 (plain_shufflenet.py); then ONNX Runtime's per-operator profile of
ShuffleNet 1x g=3 (fp32 and int8). Writes benchmarks/results/table8.json, the PNG plots under docs/table8/,
and docs/table8.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from plain_shufflenet import PlainShuffleNet
from shufflenet.benchmark import (DEFAULT_BACKENDS, DEFAULT_MODELS, SPEED_REFERENCE, plot_results, results_table,
                                  run_benchmark, write_json)
from shufflenet.export import export_onnx
from shufflenet.image_data import image_batches
from shufflenet.files import atomic_output
from shufflenet.ort_profile import profile_onnx
from shufflenet.published import TABLE8_LATENCY_MS, TABLE8_RESOLUTIONS
from shufflenet.quantize import export_int8_onnx, quantize_onnx
from shufflenet.report import format_table
from shufflenet.inference import load_model

ROOT = Path(__file__).resolve().parent.parent
PLAIN = "plain_shufflenet_v1_x1_0_g3"  # eager yardstick
PROFILED = "shufflenet_v1_x1_0_g3"
THREADS = (1, 2)


def keep(name: str, backend: str, resolution: tuple[int, int], threads: int) -> bool:
    """Which cells the full run measures (all of DEFAULT_BACKENDS everywhere, the rest where they inform)."""
    if name == PLAIN:
        return backend == "eager"
    if backend == "eager-compile":
        return resolution == (224, 224) and threads == 1
    if backend == "ort-plain":
        return name.startswith("shufflenet_v1") and threads == 1
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


def int8_accuracy(model_name: str, weights: str, data: str) -> dict[str, Any]:
    """Top-1 of the fp32 and int8 (equalized, as `shufflenet export --int8` makes it) ONNX files of a trained
    model on the labelled set ``data`` (CIFAR-10 root: calibrated on train, evaluated on test)."""
    model, recorded = load_model(model_name, weights)
    calibration = torch.cat([x for x, _ in image_batches(data, recorded, 256, split="train")])
    with tempfile.TemporaryDirectory() as scratch:
        _, scores = export_int8_onnx(model, Path(scratch) / "int8.onnx", recorded.crop, calibration,
                                     name=model_name, preprocessing=recorded, evaluation=image_batches(data, recorded))
    return {"model": model_name, "weights": weights, "data": data, **{k: v for k, v in scores["int8"].items()},
            "fp32_top1": scores["fp32"]["top1"], "change": scores["int8"]["top1"] - scores["fp32"]["top1"]}


def targets(records: list[dict], threads: int, accuracy: dict[str, Any] | None) -> str:
    """The issue 5 targets at 224, batch 1, with ``threads`` threads: value, goal, met or not."""
    at = {"resolution": (224, 224), "threads": threads}
    half = find(records, model="shufflenet_v1_x0_5_g3", backend="ort", **at)
    one = find(records, model=PROFILED, backend="ort", **at)
    one_int8 = find(records, model=PROFILED, backend="ort-int8", **at)
    eager = find(records, model=PROFILED, backend="eager", **at)
    plain = find(records, model=PLAIN, backend="eager", **at)
    rows = []

    def add(what: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append((what, None if value is None else round(value, 2), goal,
                     "n/a" if met is None else ("yes" if met else "no")))

    speedup = half and half["speedup_vs_alexnet"]
    add("ShuffleNet 0.5x g=3, ORT fp32: speedup over AlexNet (ORT fp32)", speedup, ">= 13",
        None if speedup is None else speedup >= 13)
    ratio = one and one["latency_over_bound"]
    add("ShuffleNet 1x g=3, ORT fp32: latency / compute bound", ratio, "<= 1.25",
        None if ratio is None else ratio <= 1.25)
    int8 = one and one_int8 and one["median_ms"] / one_int8["median_ms"]
    add("ShuffleNet 1x g=3: ORT fp32 latency / ORT int8 latency", int8, ">= 2", None if not int8 else int8 >= 2)
    drop = None if accuracy is None else -accuracy["change"]
    add(f"int8: top-1 drop (points){'' if accuracy is None else ', ' + accuracy['model']}", drop, "<= 1",
        None if drop is None else drop <= 1)
    eager_ratio = eager and plain and eager["median_ms"] / plain["median_ms"]
    add("ShuffleNet 1x g=3 eager: ours / plain implementation", eager_ratio, "<= 1",
        None if not eager_ratio else eager_ratio <= 1)
    return format_table(("target", "measured", "goal", "met"), rows)


def profile_tables(resolution: tuple[int, int]) -> tuple[str, str]:
    """ONNX Runtime per-operator profiles of ShuffleNet 1x g=3: our fp32 export and its int8 version."""
    model = load_model(PROFILED)[0]
    tables = []
    with tempfile.TemporaryDirectory() as scratch:
        fp32, int8 = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        export_onnx(model, fp32, resolution, name=PROFILED)
        quantize_onnx(fp32, int8, torch.randn(8, 3, *resolution))
        for path in (fp32, int8):
            rows = [(r["kind"], r["nodes"], round(r["us"], 1), f"{100 * r['share']:.1f}%",
                     round(r["mmacs"], 2) if "mmacs" in r else None,
                     round(r["gmacs_per_s"], 1) if "gmacs_per_s" in r else None)
                    for r in profile_onnx(path, (1, 3, *resolution))]
            tables.append(format_table(("operator", "nodes", "us / run", "share", "MMACs", "GMAC/s"), rows))
    return tables[0], tables[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="224 only, 1 thread, 5 repeats, no torch.compile (smoke test)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/table8.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where table8.md and table8/*.png go")
    parser.add_argument("--int8-weights", help="trained weights for the int8 accuracy target (safetensors)")
    parser.add_argument("--int8-model", default=PROFILED, help=f"their model name (default {PROFILED})")
    parser.add_argument("--int8-data", default=str(ROOT.parent / "shared" / "data" / "cifar10"),
                        help="labelled set for it (default: the shared CIFAR-10)")
    args = parser.parse_args()
    resolutions = [(224, 224)] if args.quick else list(TABLE8_RESOLUTIONS)
    threads = (1,) if args.quick else THREADS
    started = time.time()
    models = {name: load_model(name)[0] for name in DEFAULT_MODELS}
    models[PLAIN] = PlainShuffleNet(models[PROFILED])
    backends = list(DEFAULT_BACKENDS) + ["ort-plain"] + ([] if args.quick else ["eager-compile"])
    result = run_benchmark(models, backends, resolutions, threads, batch=1,
                           repeats=5 if args.quick else 25, warmup=2 if args.quick else 3,
                           max_seconds=1.0 if args.quick else 2.5, only=keep)
    fp32_profile, int8_profile = profile_tables((224, 224))
    result["ort_profile"] = {"model": PROFILED, "fp32": fp32_profile, "int8": int8_profile}
    accuracy = int8_accuracy(args.int8_model, args.int8_weights, args.int8_data) if args.int8_weights else None
    result["int8_accuracy"] = accuracy
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.json)
    docs = Path(args.docs)
    plots = [path for res in resolutions for t in threads
             for path in plot_results(result, docs / "table8", res, t)]
    records = result["measurements"]
    env = result["environment"]
    bound = ", ".join(f"{t} thread(s) {b['gmacs_best']:.1f} GMAC/s (median {b['gmacs_median']:.1f})"
                      for t, b in result["compute_bound"].items())
    command = "PYTHONPATH=src python benchmarks/table8.py" + (" --quick" if args.quick else "")
    text = f"""# ShuffleNet Table 8 on this CPU (generated)

Generated by `{command}` on {env['date']} in {(time.time() - started) / 60:.1f} minutes
({env['cpu']}, {env['logical_cpus']} logical CPUs, torch {env['torch']}, onnxruntime {env['onnxruntime']}).
Latency = median of up to {result['settings']['repeats']} runs after {result['settings']['warmup']} warm-up runs,
batch 1, random weights. fp32 compute bound (GEMM {result['compute_bound']['1']['size']}^3): {bound}.
Method and discussion: [deploy.md](deploy.md). Raw data: `benchmarks/results/table8.json`.

## Table 8 beside the paper (ONNX Runtime fp32, 1 thread; paper: Snapdragon 820, 1 thread)

{table8_rows(records, resolutions)}

## Targets (224x224, batch 1)

1 thread:

{targets(records, 1, accuracy)}
""" + ("" if args.quick else f"""
2 threads:

{targets(records, 2, accuracy)}
""") + f"""
## Where ONNX Runtime spends the time: ShuffleNet 1x g=3, 224x224, 1 thread

fp32 (our export):

{fp32_profile}

int8 (QDQ, per-channel):

{int8_profile}

## Every measurement

{results_table(result)}

## Plots

""" + "\n".join(f"![{p.stem}](table8/{p.name})" for p in plots) + "\n"
    with atomic_output(docs / "table8.md") as temporary:
        temporary.write_text(text)
    print(text)
    print(f"wrote {args.json}, {docs / 'table8.md'} and {len(plots)} plots", file=sys.stderr)


if __name__ == "__main__":
    main()
