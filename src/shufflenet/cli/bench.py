"""``shufflenet bench``: latency beside complexity per backend (the ShuffleNet Table 8 quantities)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.latency import BACKENDS, DEFAULT_BACKENDS, DEFAULT_MODELS, parse_resolution, results_table, run_benchmark
from ..bench.plots import plot_results
from ..data.preprocessing import IMAGENET
from ..deploy.int8 import calibration_images
from ..factory import load
from ..io.atomic import check_writable
from ..io.results import write_result
from .common import add_md5_argument, bounded, positive_int


def cmd_bench(args: argparse.Namespace) -> None:
    resolutions = [parse_resolution(text) for text in args.resolution]
    unknown = sorted(set(args.backend.split(",")) - set(BACKENDS))
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    if args.json:
        check_writable(args.json)  # before the benchmark, not after it
    if args.plot and Path(args.plot).exists() and not Path(args.plot).is_dir():
        raise ValueError(f"--plot {args.plot} is a file; give a folder")
    models = {name: load(name).model for name in (args.models or DEFAULT_MODELS)}
    calibration = None
    if args.calib:
        preprocessing = IMAGENET.for_resolution(resolutions[0][0])
        calibration = calibration_images(args.calib, preprocessing, 16, check_md5=args.check_md5)
    result = run_benchmark(models, args.backend.split(","), resolutions, args.threads, args.batch, args.repeats,
                           args.warmup, args.max_seconds, calibration)
    print(results_table(result))
    if args.json:
        write_result(args.json, result, args.command_line)
        print(f"wrote {args.json}")
    if args.plot:
        for res in resolutions:
            for threads in args.threads:
                for path in plot_results(result, args.plot, res, threads):
                    print(f"wrote {path}")


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="latency vs complexity per backend (ShuffleNet Table 8 quantities)")
    bench.add_argument("models", nargs="*", help="registered names, tv_ references included (default: Table 8's "
                                                 "models and the references)")
    bench.add_argument("--backend", default=",".join(DEFAULT_BACKENDS),
                       help=f"comma-separated, from {','.join(BACKENDS)} (default {','.join(DEFAULT_BACKENDS)})")
    bench.add_argument("--resolution", nargs="+", default=["224"], help="SIZE or HEIGHTxWIDTH, e.g. 224 480x640")
    bench.add_argument("--threads", nargs="+", type=positive_int, default=[1], help="thread counts (default 1)")
    bench.add_argument("--batch", type=positive_int, default=1)
    bench.add_argument("--repeats", type=positive_int, default=50, help="timed runs per cell (default 50)")
    bench.add_argument("--warmup", type=bounded(int, 0), default=5, help="untimed runs first (default 5)")
    bench.add_argument("--max-seconds", type=bounded(float, 0), default=10.0,
                       help="stop timing a cell after this (default 10)")
    bench.add_argument("--calib", help="calibration images for ort-int8 and executorch-int8 (default: random "
                                             "inputs)")
    add_md5_argument(bench)
    bench.add_argument("--json", help="write the full result as JSON (with the machine and the command)")
    bench.add_argument("--plot", help="directory for the PNG plots")
    bench.set_defaults(func=cmd_bench)
