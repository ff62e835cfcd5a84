"""The reproduce grid's throughput: the same grid cells trained the way the grid ran them before (one cell at a
time in one process, 2 threads, eager) and the new way (``shufflenet reproduce`` without options: cells as Ray
tasks on a local instance, as many at once as the placement for this machine holds, with its threads per cell; eager
unless ``--compile``), in one run, on real CIFAR-10.

Each cell trains ``--epochs`` epochs of ``--steps`` steps (batch 256, the grid's recipe) and is evaluated after
every epoch on the 10,000 test images, as a grid cell is; compile warm-up, Ray's start-up and the evaluations are
inside the wall-clock time of each way. The figure is images trained per second of wall-clock time over the
whole set; the ratio new / old is the issue's target (at least 1.8x). Ways run in alternation over
``--repeats`` rounds (old, new, old, new, ...), medians reported.

    python benchmarks/grid_throughput.py --data-dir ../shared/data/cifar10 [--steps 100] [--epochs 2]
        [--repeats 1] [--workers N] [--threads-per-cell T] [--compile] [--json results/grid_throughput.json]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from shufflenet.experiments.cluster import local_resources, placement_for, run_grid
from shufflenet.experiments.grid import Cell, Grid
from shufflenet.io.results import write_result
from shufflenet.text_table import format_table

# Grid cells of every kind the default tables hold: ShuffleNet at g = 1, 3 and 8 (grouped 1x1 convolutions scale
# worst on one thread at g = 8), a Table 4 structure and the Table 5 MobileNet.
MODELS = ("shufflenet_v1_x0_5_g3", "shufflenet_v1_x0_25_g8", "shufflenet_v1_x0_5_g1", "table4_resnet_38m",
          "mobilenet_v1_x0_25", "shufflenet_v1_x0_25_g3")
BATCH = 256  # the small recipe's


def time_way(cells: list[Cell], data_dir: str, steps: int, *, workers: int, threads: int | None,
             compile_cells: bool, check_md5: bool) -> dict[str, Any]:
    """Train ``cells`` from scratch in a fresh folder; wall-clock seconds and each cell's training figures."""
    folder = Path(tempfile.mkdtemp(prefix="grid-throughput-"))
    try:
        grid = Grid("cifar10", data_dir, folder / "results", folder / "runs", threads=threads, check_md5=check_md5,
                    max_steps=steps, compile=compile_cells)
        start = time.perf_counter()
        records = run_grid(grid, cells, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        if len(records) != len(cells):
            raise SystemExit(f"{len(cells) - len(records)} cell(s) failed: see {folder / 'results' / 'failed'}")
        images = sum(cell.epochs * steps * BATCH for cell in cells)
        return {"seconds": seconds, "images_per_sec": images / seconds,
                "cells": {r["cell"]["model"]: {"train_seconds": r["train_seconds"],
                                               "images_per_sec": r["images_per_sec"]} for r in records}}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the folder holding cifar-10-batches-py")
    parser.add_argument("--no-md5-check", dest="check_md5", action="store_false")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch of each cell")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="the new way: cells at once (default: the placement's)")
    parser.add_argument("--threads-per-cell", type=int, default=None,
                        help="the new way: threads of every cell (default: the placement's)")
    parser.add_argument("--compile", action="store_true", help="the new way: torch.compile every cell")
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args()
    cells = [Cell(model, model, None, 0, args.epochs) for model in args.models]
    placement = placement_for([local_resources()], args.workers, args.threads_per_cell, None)
    new_way = (f"now: Ray, {placement.workers} cells at once, {placement.threads} thread(s) each, "
               f"{'compiled' if args.compile else 'eager'}")
    ways = {"before: one cell at a time, 2 threads, eager": dict(workers=0, threads=2, compile_cells=False),
            new_way: dict(workers=placement.workers, threads=placement.threads, compile_cells=args.compile)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            runs[name].append(time_way(cells, args.data_dir, args.steps, check_md5=args.check_md5, **way))
            print(f"{name}: {runs[name][-1]['seconds']:.0f} s", flush=True)
    before, now = (statistics.median(r["images_per_sec"] for r in runs[name]) for name in ways)
    rows = [(name, round(statistics.median(r["seconds"] for r in runs[name]), 1),
             round(statistics.median(r["images_per_sec"] for r in runs[name]), 1)) for name in ways]
    print(format_table(("way", "wall-clock s (median)", "images/s (median)"), rows))
    print(f"\nthroughput now / before: {now / before:.2f}x (target 1.8x)")
    if args.json:
        write_result(args.json, {"models": args.models, "plan": {**vars(placement), "compile": args.compile},
                                 "steps_per_epoch": args.steps, "epochs": args.epochs,
                                 "batch": BATCH, "repeats": args.repeats, "ways": runs,
                                 "images_per_sec": {name: value for name, value in zip(ways, (before, now))},
                                 "speedup": now / before})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
