"""``shufflenet export``: an ONNX or ExecuTorch (each optionally int8) or TorchScript file, checked against
PyTorch; the file is written only when every step, the int8 accuracy check included, has succeeded."""
from __future__ import annotations

import argparse

from ..data.sources import batches, open_folder
from ..deploy.executorch import INT8_PARITY_TOLERANCE, export_executorch
from ..deploy.export import PARITY_TOLERANCE, export_onnx, export_torchscript
from ..deploy.int8 import CALIBRATION_METHODS, calibration_images, export_int8_onnx
from ..factory import load
from ..io.atomic import check_writable
from .common import add_md5_argument, positive_int


def cmd_export(args: argparse.Namespace) -> None:
    if args.int8 and (args.format == "torchscript" or not args.calib):
        raise ValueError("--int8 needs --format onnx or executorch and --calib DIR (a folder of images or a "
                         "CIFAR-10 root)")
    if args.allow_portable and args.format != "executorch":
        raise ValueError("--allow-portable is for --format executorch; drop it")
    check_writable(args.output)
    loaded = load(args.model, args.weights, args.num_classes)
    resolution = args.resolution or loaded.preprocessing.crop
    preprocessing = loaded.preprocessing.for_resolution(resolution)
    model = loaded.model
    names = model.record.class_names  # recorded names only, not the ImageNet fallback
    scores = calibration = evaluation = None
    if args.int8:
        calibration = calibration_images(args.calib, preprocessing, args.calib_count, check_md5=args.check_md5)
        scored, _ = open_folder(args.evaluate or args.calib, "test", preprocessing.transform(), class_names=names,
                                check_md5=args.check_md5)
        evaluation = batches(scored, 32, limit=args.eval_count)
    if args.format == "torchscript":
        diff = export_torchscript(model, args.output, resolution)
    elif args.format == "executorch":
        result = export_executorch(model, args.output, resolution, calibration=calibration, evaluation=evaluation,
                                   allow_portable=args.allow_portable)
        diff, scores = result.parity, result.scores
        print(result.delegation.describe())
    elif not args.int8:
        diff = export_onnx(model, args.output, resolution, rewrite=not args.no_rewrite)
    else:
        diff, scores = export_int8_onnx(
            model, args.output, resolution, calibration, rewrite=not args.no_rewrite, method=args.calib_method,
            evaluation=evaluation)
    if args.format == "executorch":
        tolerance = INT8_PARITY_TOLERANCE if args.int8 else PARITY_TOLERANCE
        against = "the quantized PyTorch module" if args.int8 else "PyTorch"
        print(f"wrote {args.output} (executorch, XNNPACK{', int8' if args.int8 else ''}, {resolution}x{resolution}, "
              f"batch 1); parity with {against}: max abs diff {diff:.2e} at batch 1 and 3, image by image "
              f"(tolerance {tolerance:g} of the largest logit, at least {tolerance:g})")
    else:
        print(f"wrote {args.output} ({args.format}{', int8' if args.int8 else ''}, {resolution}x{resolution}, "
              f"dynamic batch); fp32 parity with PyTorch: max abs diff {diff:.2e} at batch 1 and 3 (tolerance "
              f"{PARITY_TOLERANCE:g} of the largest logit, at least {PARITY_TOLERANCE:g})")
    if scores is not None:
        print(int8_report(scores, args.evaluate or args.calib))


def int8_report(scores: dict[str, dict[str, float]], data: str) -> str:
    """The int8 accuracy line of an int8 export: agreement with fp32 and, with labels, the top-1 change."""
    fp32_score, int8_score = scores["fp32"], scores["int8"]
    line = (f"int8 on {int8_score['images']} images of {data}: "
            f"top-1 agreement with fp32 {int8_score['agreement']:.2f}%")
    if "top1" in int8_score:
        line += (f", top-1 {fp32_score['top1']:.2f}% (fp32) -> {int8_score['top1']:.2f}% (int8), "
                 f"change {int8_score['top1'] - fp32_score['top1']:+.2f} points")
    return line


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="ONNX, ExecuTorch (.pte) or TorchScript file for deployment, "
                                                "checked against PyTorch")
    export.add_argument("model", help="registered model name (or a weight file)")
    export.add_argument("--weights", help="safetensors weights file; without it the model is randomly initialised")
    export.add_argument("--format", choices=("onnx", "executorch", "torchscript"), default="onnx",
                        help="onnx (ONNX Runtime), executorch (a .pte lowered to XNNPACK, batch 1) or torchscript")
    export.add_argument("-o", "--output", required=True, help="file to write (replaced atomically)")
    export.add_argument("--resolution", type=positive_int, help="input size (default: the weights' crop, else 224)")
    export.add_argument("--num-classes", type=positive_int, help="classifier outputs without --weights (default 1000)")
    export.add_argument("--no-rewrite", action="store_true", help="ONNX without the blocked-layout rewrite")
    export.add_argument("--int8", action="store_true", help="int8 static quantization (ONNX: ONNX Runtime QDQ; "
                                                            "executorch: PT2E with the XNNPACK quantizer)")
    export.add_argument("--allow-portable", action="store_true",
                        help="executorch: write the file even when operators are left outside XNNPACK")
    export.add_argument("--calib", help="calibration images: a CIFAR-10 root, a train/ + val/ tree (train/ is used), "
                                        "a class-per-folder tree or a folder of images")
    export.add_argument("--calib-count", type=positive_int, default=256, help="calibration images (default 256)")
    export.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="percentile",
                        help="how activation ranges are set, ONNX int8 (default percentile)")
    export.add_argument("--evaluate", help="labelled images for the int8 accuracy change: a CIFAR-10 root (test "
                                           "split), a train/ + val/ tree (val/) or a class-per-folder tree "
                                           "(default: --calib)")
    export.add_argument("--eval-count", type=positive_int, help="evaluate on at most this many images (default all)")
    add_md5_argument(export)
    export.set_defaults(func=cmd_export)
