"""Where a second thread helps ExecuTorch and where it does not, per kind of XNNPACK operator.

Table 8's run found ExecuTorch (XNNPACK, batch 1, 224x224) fp32 faster on 2 threads for ShuffleNet 0.5x g=3
but not for ShuffleNet 1x g=3 and MobileNet V1. This exports each model's .pte once (fp32; ShuffleNet 1x g=3
also int8, calibrated on random images as Table 8's profile is, so that int8 / fp32 is measured side by side at
both thread counts) and, over
``--repeats`` rounds alternating 1 and 2 threads, times the whole program (``forward`` from Python, median of
``--runs`` calls) and each kind of operator (ExecuTorch's ETDump through ``bench.pte_profile``); medians of the
rounds. The speed-up of a kind is its time on 1 thread over its time on 2; for the whole program the range of
the rounds' speed-ups is shown too (on a shared virtual machine the second core's speed varies from round to
round).

    python benchmarks/executorch_threads.py [--runs 30] [--repeats 3] [--json results/executorch_threads.json]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from shufflenet.bench.pte_profile import profile_pte
from shufflenet.deploy.executorch import export_executorch
from shufflenet.factory import load
from shufflenet.io.pte_file import pte_runner
from shufflenet.io.results import write_result
from shufflenet.text_table import format_table

PROGRAMS = (("shufflenet_v1_x0_5_g3", "fp32"), ("shufflenet_v1_x1_0_g3", "fp32"), ("shufflenet_v1_x1_0_g3", "int8"),
            ("mobilenet_v1_x1_0", "fp32"))
THREADS = (1, 2)
SHAPE = (1, 3, 224, 224)
MIN_SHARE = 0.03  # kinds below 3% of the 1-thread operator time are summed into one row


def program_ms(path: Path, threads: int, runs: int) -> float:
    """Median wall-clock time of one ``forward`` call (after one warm-up call)."""
    run = pte_runner(path, threads)
    image = torch.randn(SHAPE)
    run(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(path: Path, runs: int, repeats: int) -> dict[str, Any]:
    """Whole-program milliseconds and per-kind microseconds at each thread count, medians over the rounds."""
    rounds: dict[int, list[tuple[float, dict[str, float]]]] = {t: [] for t in THREADS}
    nodes: dict[str, int] = {}
    for _ in range(repeats):
        for threads in THREADS:
            kinds = profile_pte(path, SHAPE, runs=runs, threads=threads)
            nodes.update({k["kind"]: k["nodes"] for k in kinds})
            rounds[threads].append((program_ms(path, threads, runs), {k["kind"]: k["us"] for k in kinds}))
    return {str(threads): {"program_ms": statistics.median(ms for ms, _ in done),
                           "program_ms_per_round": [ms for ms, _ in done],
                           "operator_us": {kind: statistics.median(us.get(kind, 0.0) for _, us in done)
                                           for kind in nodes}}
            for threads, done in rounds.items()} | {"nodes": nodes}


def threads_table(record: dict[str, Any]) -> str:
    """Per program: the whole program and each kind of operator on 1 and 2 threads, and the speed-up."""
    lines = []
    for model, figures in record["programs"].items():
        one, two = figures["1"], figures["2"]
        rounds = [a / b for a, b in zip(one["program_ms_per_round"], two["program_ms_per_round"])]
        lines.append((model, "whole program (ms)", None, round(one["program_ms"], 2), round(two["program_ms"], 2),
                      f"{one['program_ms'] / two['program_ms']:.2f}x (rounds: {min(rounds):.2f}-{max(rounds):.2f}x)"))
        total, total_two = sum(one["operator_us"].values()), sum(two["operator_us"].values())
        lines.append((model, "all operators (us)", sum(figures["nodes"].values()), round(total, 1),
                      round(total_two, 1), f"{total / total_two:.2f}x"))
        rest = [0.0, 0.0, 0]
        for kind, us in sorted(one["operator_us"].items(), key=lambda item: -item[1]):
            if us < MIN_SHARE * total:
                rest = [rest[0] + us, rest[1] + two["operator_us"][kind], rest[2] + figures["nodes"][kind]]
                continue
            lines.append((model, f"{kind} ({100 * us / total:.0f}%, us)", figures["nodes"][kind], round(us, 1),
                          round(two["operator_us"][kind], 1), f"{us / two['operator_us'][kind]:.2f}x"))
        if rest[2]:
            lines.append((model, f"other kinds ({100 * rest[0] / total:.0f}%, us)", rest[2], round(rest[0], 1),
                          round(rest[1], 1), f"{rest[0] / rest[1]:.2f}x"))
    return format_table(("program", "what (share of 1-thread operator time)", "operators", "1 thread", "2 threads",
                         "speed-up"), lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="forward calls per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of 1 and 2 threads, alternating")
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args()
    programs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, precision in PROGRAMS:
            path = Path(scratch) / f"{name}_{precision}.pte"
            calibration = torch.randn(8, *SHAPE[1:]) if precision == "int8" else None
            export_executorch(load(name).model, path, SHAPE[2:], calibration=calibration)
            programs[f"{name} {precision}"] = measure(path, args.runs, args.repeats)
    record = {"programs": programs, "settings": {"runs": args.runs, "repeats": args.repeats, "shape": list(SHAPE),
                                             "threads": list(THREADS)}}
    print(threads_table(record))
    if args.json:
        write_result(args.json, record)


if __name__ == "__main__":
    main()
