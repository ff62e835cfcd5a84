"""The ``shufflenet`` command line: ``models``, ``profile``, ``train``, ``eval``, ``convert``, ``export``, ``bench``,
``predict``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import torch

from .complexity import Profile, profile
from .convert import SOURCE_FORMATS, convert_checkpoint
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


def read_config_file(path: str) -> dict[str, Any]:
    """Training options from a YAML (.yaml/.yml) or TOML (.toml) file, keys as in ``TrainConfig``."""
    text = Path(path).read_text()
    if path.endswith(".toml"):
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        values = tomllib.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of training options")
    return {key.replace("-", "_"): value for key, value in values.items()}


def cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, TrainingDiverged, train

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values = {**(read_config_file(args.config) if args.config else {}), **given}
    config = TrainConfig.from_dict(values)
    try:
        result = train(config, resume=args.resume)
    except TrainingDiverged as error:
        raise SystemExit(f"shufflenet train: {error}") from None
    except KeyboardInterrupt as error:
        raise SystemExit(f"shufflenet train: {error}; continue with --resume auto") from None
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun only the first process reports
        return
    cost = trained_model_cost(config.model, result)
    print(json.dumps(result) if args.json else
          f"{config.model}: top-1 {result['eval_top1']:.2f}% (best {result['best_top1']:.2f}%), top-5 "
          f"{result['eval_top5']:.2f}% on {result['eval_images']} test images; {cost}; "
          f"weights: {result['best_weights']}")


def trained_model_cost(name: str, result: dict[str, Any]) -> str:
    """MFLOPs and parameters of the trained model, read back from its saved weights."""
    model = create_model(name, weights=result["best_weights"])
    crop = model.preprocessing.crop
    cost = profile(model, crop)
    return f"{cost.mflops:.2f} MFLOPs at {crop}x{crop}, {cost.params:,} parameters"


def cmd_eval(args: argparse.Namespace) -> None:
    from .data import build_datasets
    from .evaluate import evaluate
    from .weights import load_weights

    model = create_model(args.model, weights=args.weights) if args.model else load_weights(args.weights)
    _, eval_set, spec = build_datasets(args.data, args.data_dir, args.download, args.check_md5,
                                       getattr(model, "preprocessing", None))
    if spec.num_classes != model.num_classes:
        raise ValueError(f"{args.weights} predicts {model.num_classes} classes but {args.data} has {spec.num_classes}")
    result = evaluate(model, eval_set, batch_size=args.batch_size, workers=args.workers, per_class=args.per_class,
                      progress=not args.json)
    result["model"] = model.arch["name"]
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']} on {args.data} ({result['images']} images): top-1 {result['top1']:.2f}% "
          f"(error {result['top1_err']:.2f}%), top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}, "
          f"{result['images_per_sec']:.0f} images/s")
    if args.per_class:
        names = spec.class_names or [str(i) for i in range(spec.num_classes)]
        print(format_table(("class", "top-1 %"), [(n, round(a, 2)) for n, a in zip(names, result["per_class"])]))


def add_data_arguments(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--data", default=default, help="digits (built in), cifar10, cifar100 or imagefolder")
    parser.add_argument("--data-dir", default=default, help="dataset folder (CIFAR files, or train/ + val/)")
    parser.add_argument("--download", action="store_true", default=default, help="download CIFAR if missing")
    parser.add_argument("--no-md5-check", dest="check_md5", action="store_false", default=default,
                        help="load a faithful CIFAR copy whose files differ from the official ones")


def cmd_convert(args: argparse.Namespace) -> None:
    conversion = convert_checkpoint(args.src, args.dst, args.source_format, args.model, args.resize)
    print(f"converted {args.source_format} checkpoint {args.src} -> {args.dst}")
    print(conversion.summary())


def add_convert_parser(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="official megvii / torchvision / timm checkpoint -> our weight file")
    convert.add_argument("src", help="the downloaded checkpoint (.pth, .pth.tar, .bin or .safetensors)")
    convert.add_argument("dst", help="the safetensors file to write")
    convert.add_argument("--from", dest="source_format", required=True, choices=SOURCE_FORMATS,
                         help="who published the checkpoint")
    convert.add_argument("--model", help="registered model name (default: inferred from the tensor shapes)")
    convert.add_argument("--resize", type=int, help="resize size to record (torchvision IMAGENET1K_V2: 232)")
    convert.set_defaults(func=cmd_convert)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import ParityError, export_onnx, export_torchscript
    from .image_data import image_batches
    from .inference import load_model
    from .quantize import export_int8_onnx

    if args.int8 and (args.format != "onnx" or not args.calib):
        raise ValueError("--int8 needs --format onnx and --calib DIR (a folder of images or a CIFAR-10 root)")
    model, recorded = load_model(args.model, args.weights, args.num_classes)
    resolution = args.resolution or recorded.crop
    preprocessing = recorded.for_resolution(resolution)
    try:
        if args.format == "torchscript":
            diff = export_torchscript(model, args.output, resolution, preprocessing=preprocessing)
        elif not args.int8:
            diff = export_onnx(model, args.output, resolution, name=args.model, preprocessing=preprocessing,
                               class_names=getattr(model, "class_names", None),
                               rewrite=not args.no_rewrite)
        else:
            # CIFAR-10 calibrates on the train split, so that --evaluate on its test split stays unseen.
            calibration = torch.cat([x for x, _ in image_batches(args.calib, preprocessing, args.calib_count,
                                                                 split="train")])
            diff, scores = export_int8_onnx(
                model, args.output, resolution, calibration, name=args.model, preprocessing=preprocessing,
                class_names=getattr(model, "class_names", None), rewrite=not args.no_rewrite,
                method=args.calib_method,
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
    from .inference import load_model
    from .preprocessing import IMAGENET

    resolutions = [parse_resolution(text) for text in args.resolution]
    models = {name: load_model(name)[0] for name in (args.models or DEFAULT_MODELS)}
    calibration = None
    if args.calib:
        preprocessing = IMAGENET.for_resolution(resolutions[0][0])
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

    # Options left unset fall back to the config file, then to the recipe (see train.TrainConfig).
    unset = argparse.SUPPRESS
    tr = commands.add_parser("train", help="train a model (one CPU, a GPU, or many through torchrun)",
                             argument_default=unset)
    tr.add_argument("model", help="registered model name")
    add_data_arguments(tr, unset)
    tr.add_argument("--config", default=None, help="YAML or TOML file of options (command line wins)")
    tr.add_argument("--resume", default=None, help="checkpoint path, or 'auto' for the run folder's latest")
    tr.add_argument("--json", action="store_true", default=False, help="print the final result as JSON")
    for name, kind in (("recipe", str), ("epochs", int), ("batch-size", int), ("lr", float),
                       ("lr-reference-batch", int), ("momentum", float), ("weight-decay", float), ("schedule", str),
                       ("warmup-epochs", float), ("label-smoothing", float), ("drop-rate", float),
                       ("ema-decay", float), ("workers", int), ("seed", int), ("output", str), ("name", str),
                       ("max-steps-per-epoch", int), ("threads", int), ("time-budget", float)):
        tr.add_argument(f"--{name}", type=kind)
    for name in ("nesterov", "small-input", "compile", "amp", "channels-last"):
        tr.add_argument(f"--{name}", action=argparse.BooleanOptionalAction)
    tr.set_defaults(func=cmd_train)

    ev = commands.add_parser("eval", help="top-1/top-5 accuracy of saved weights on a dataset")
    ev.add_argument("model", nargs="?", help="registered model name (checked against the weights file)")
    ev.add_argument("--weights", required=True, help="safetensors file from training or `shufflenet convert`")
    add_data_arguments(ev)
    ev.set_defaults(data="digits", download=False, check_md5=True)
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--workers", type=int, default=0)
    ev.add_argument("--per-class", action="store_true", help="also print the accuracy of every class")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=cmd_eval)
    add_convert_parser(commands)

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
