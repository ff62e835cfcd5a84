"""The ``shufflenet`` command line: ``models``, ``profile``, ``export``, ``bench``, ``predict``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

from .complexity import Profile, profile
from .published import PUBLISHED_COMPLEXITY
from .registry import create_model, list_models
from .report import format_table


def profile_by_name(name: str, resolution: int = 224) -> Profile:
    """Profile a registered model without computing anything: it is built on the meta device."""
    with torch.device("meta"):
        model = create_model(name)
    return profile(model, resolution, name=name)


def cmd_models(args: argparse.Namespace) -> None:
    rows = []
    for name in list_models(args.pattern):
        cost = profile_by_name(name)
        rows.append((name, round(cost.mflops, 2), cost.params))
    print(format_table(("model", "MFLOPs @224", "params"), rows))


def percent_diff(ours: float, published: float) -> float:
    return round(100.0 * (ours - published) / published, 2)


def rounds_to(ours: float, published: float) -> str:
    """'yes' when ``ours`` rounded to the published figure's decimals gives the published figure."""
    decimals = len(repr(float(published)).split(".")[1].rstrip("0"))
    return "yes" if round(ours, decimals) == published else "no"


def cmd_paper(args: argparse.Namespace) -> None:
    cache: dict[tuple[str, int], Profile] = {}
    rows = []
    for row in PUBLISHED_COMPLEXITY:
        key = (row.model, row.resolution)
        if key not in cache:
            cache[key] = profile_by_name(*key)
        ours = cache[key]
        params_m = ours.params / 1e6
        rows.append((
            row.source, row.label, row.model, row.resolution,
            round(ours.mflops, 2), row.mflops, percent_diff(ours.mflops, row.mflops), rounds_to(ours.mflops, row.mflops),
            round(params_m, 3), row.params_m,
            *((None, None) if row.params_m is None else
              (percent_diff(params_m, row.params_m), rounds_to(params_m, row.params_m))),
            row.note,
        ))
    headers = ("source", "published as", "our model", "res", "MFLOPs", "published", "diff %", "same rounded",
               "params M", "published", "diff %", "same rounded", "note")
    print(format_table(headers, rows))


def cmd_profile(args: argparse.Namespace) -> None:
    if args.paper:
        return cmd_paper(args)
    if not args.model:
        raise SystemExit("shufflenet profile: give a model name (see `shufflenet models`) or --paper")
    cost = profile_by_name(args.model, args.resolution)
    if args.json:
        data = cost.to_dict()
        if not args.per_layer:
            data.pop("layers")
        print(json.dumps(data))
        return
    print(f"{cost.model} at {cost.resolution}x{cost.resolution}: {cost.mflops:.2f} MFLOPs (multiply-adds), "
          f"{cost.params:,} parameters")
    print()
    print(format_table(("block", "type", "MFLOPs", "params"),
                       [(s.name, s.kind, round(s.macs / 1e6, 3), s.params) for s in cost.stages]))
    if args.per_layer:
        print()
        print(format_table(("layer", "type", "MFLOPs", "params"),
                           [(s.name, s.kind, round(s.macs / 1e6, 3), s.params) for s in cost.layers]))


def cmd_export(args: argparse.Namespace) -> None:
    from .export import ParityError, export_onnx, export_torchscript
    from .image_data import image_batches
    from .preprocessing import Preprocessing
    from .quantize import export_int8_onnx
    from .weights_file import load_model

    if args.int8 and (args.format != "onnx" or not args.calib):
        raise ValueError("--int8 needs --format onnx and --calib DIR (a folder of images or a CIFAR-10 root)")
    model, recorded = load_model(args.model, args.weights, args.num_classes)
    resolution = args.resolution or recorded.crop
    preprocessing = Preprocessing.for_resolution(resolution, recorded.to_dict())
    try:
        if args.format == "torchscript":
            diff = export_torchscript(model, args.output, resolution, preprocessing=preprocessing)
        elif not args.int8:
            diff = export_onnx(model, args.output, resolution, name=args.model, preprocessing=preprocessing,
                               rewrite=not args.no_rewrite)
        else:
            # CIFAR-10 calibrates on the train split, so that --evaluate on its test split stays unseen.
            calibration = torch.cat([x for x, _ in image_batches(args.calib, preprocessing, args.calib_count,
                                                                 split="train")])
            diff, scores = export_int8_onnx(
                model, args.output, resolution, calibration, name=args.model, preprocessing=preprocessing,
                rewrite=not args.no_rewrite, method=args.calib_method,
                evaluation=image_batches(args.evaluate or args.calib, preprocessing, args.eval_count),
            )
    except ParityError as error:
        raise SystemExit(f"shufflenet export: error: {error}") from None
    print(f"wrote {args.output} ({args.format}{', int8' if args.int8 else ''}, {resolution}x{resolution}, "
          f"dynamic batch); fp32 parity with PyTorch: max abs diff {diff:.2e} at batch 1 and 3 (tolerance 1e-4)")
    if args.int8:
        fp32_score, int8_score = scores["fp32"], scores["int8"]
        line = f"int8 on {int8_score['images']} images of {args.evaluate or args.calib}: " \
               f"top-1 agreement with fp32 {int8_score['agreement']:.2f}%"
        if "top1" in int8_score:
            line += (f", top-1 {fp32_score['top1']:.2f}% (fp32) -> {int8_score['top1']:.2f}% (int8), "
                     f"change {int8_score['top1'] - fp32_score['top1']:+.2f} points")
        print(line)


def cmd_bench(args: argparse.Namespace) -> None:
    from .benchmark import (DEFAULT_MODELS, parse_resolution, plot_results, results_table, run_benchmark,
                            write_json)
    from .image_data import image_batches
    from .preprocessing import Preprocessing
    from .weights_file import load_model

    resolutions = [parse_resolution(text) for text in args.resolution]
    models = {name: load_model(name)[0] for name in (args.models or DEFAULT_MODELS)}
    calibration = None
    if args.calib:
        preprocessing = Preprocessing.for_resolution(resolutions[0][0])
        calibration = torch.cat([x for x, _ in image_batches(args.calib, preprocessing, 16)])
    result = run_benchmark(models, args.backend.split(","), resolutions, args.threads, args.batch, args.repeats,
                           args.warmup, args.max_seconds, calibration)
    print(results_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        for res in resolutions:
            for threads in args.threads:
                for path in plot_results(result, args.plot, res, threads):
                    print(f"wrote {path}")


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import predict

    for image, classes in zip(args.images, predict(args.model, args.images, args.weights, args.top)):
        print(f"{image}:")
        for rank, (name, probability) in enumerate(classes, 1):
            print(f"  {rank}. {name} ({100 * probability:.2f}%)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shufflenet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="table of the registered models: MFLOPs at 224 and parameters")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'shufflenet_v1_*_g3'")
    models.set_defaults(func=cmd_models)

    prof = commands.add_parser("profile", help="multiply-adds and parameters of one model, or --paper")
    prof.add_argument("model", nargs="?", help="registered model name")
    prof.add_argument("--resolution", type=int, default=224, help="square input size (default 224)")
    prof.add_argument("--per-layer", action="store_true", help="also list every conv and linear layer")
    prof.add_argument("--json", action="store_true", help="print one JSON object")
    prof.add_argument("--paper", action="store_true", help="our counts beside every published figure")
    prof.set_defaults(func=cmd_profile)

    export = commands.add_parser("export", help="ONNX or TorchScript file for deployment, checked against PyTorch")
    export.add_argument("model", help="registered model name (or tv_alexnet, tv_shufflenet_v2_x1_0)")
    export.add_argument("--weights", help="safetensors weights file; without it the model is randomly initialised")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("-o", "--output", required=True, help="file to write (replaced atomically)")
    export.add_argument("--resolution", type=int, help="input size (default: the weights' crop, else 224)")
    export.add_argument("--num-classes", type=int, help="classifier outputs without --weights (default 1000)")
    export.add_argument("--no-rewrite", action="store_true", help="ONNX without the blocked-layout rewrite")
    export.add_argument("--int8", action="store_true", help="int8 static quantization (ONNX Runtime, QDQ)")
    export.add_argument("--calib", help="calibration images: a folder of images or a CIFAR-10 root")
    export.add_argument("--calib-count", type=int, default=256, help="calibration images to use (default 256)")
    export.add_argument("--calib-method", choices=("percentile", "minmax", "entropy"), default="percentile",
                        help="how activation ranges are set (default percentile)")
    export.add_argument("--evaluate", help="labelled set for the int8 accuracy change: CIFAR-10 root (test split) "
                                           "or a folder with one sub-folder per class (default: --calib)")
    export.add_argument("--eval-count", type=int, help="evaluate on at most this many images (default all)")
    export.set_defaults(func=cmd_export)

    from .benchmark import BACKENDS, DEFAULT_BACKENDS

    bench = commands.add_parser("bench", help="latency vs complexity per backend (ShuffleNet Table 8 quantities)")
    bench.add_argument("models", nargs="*", help="registered or tv_ names (default: Table 8 models + references)")
    bench.add_argument("--backend", default=",".join(DEFAULT_BACKENDS),
                       help=f"comma-separated, from {','.join(BACKENDS)} (default {','.join(DEFAULT_BACKENDS)})")
    bench.add_argument("--resolution", nargs="+", default=["224"], help="SIZE or HEIGHTxWIDTH, e.g. 224 480x640")
    bench.add_argument("--threads", nargs="+", type=int, default=[1], help="thread counts (default 1)")
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--repeats", type=int, default=50, help="timed runs per cell (default 50)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    bench.add_argument("--max-seconds", type=float, default=10.0, help="stop timing a cell after this (default 10)")
    bench.add_argument("--calib", help="calibration images for ort-int8 (default: random inputs)")
    bench.add_argument("--json", help="write the full result as JSON")
    bench.add_argument("--plot", help="directory for the PNG plots")
    bench.set_defaults(func=cmd_bench)

    pred = commands.add_parser("predict", help="top-5 classes of images")
    pred.add_argument("model", help="registered model name or an exported .onnx file")
    pred.add_argument("images", nargs="+", help="image files")
    pred.add_argument("--weights", help="safetensors weights file (with its recorded preprocessing)")
    pred.add_argument("--top", type=int, default=5)
    pred.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:  # bad user input: one clear line, no traceback
        print(f"shufflenet {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
