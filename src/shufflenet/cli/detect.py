"""``shufflenet detect train|eval|predict|export``: Faster R-CNN with our backbones (the paper's Table 7)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .common import bounded
from .train import add_config_options, add_run_options, config_from_arguments, run_record


def cmd_train(args: argparse.Namespace) -> None:
    from ..detection.config import DetectConfig
    from ..detection.task import train_detector
    from ..io.atomic import check_writable
    from ..io.results import write_result

    config = config_from_arguments(args, DetectConfig)
    if args.record:
        check_writable(args.record)
    result = train_detector(config, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    if args.record:
        record = run_record(Path(result["run_dir"]))
        final = record["final"]
        write_result(args.record, {**record, "backbone": config.model, "min_size": config.min_size,
                                   "fpn": config.fpn, "map": final.get("eval_map", 0.0),
                                   "map50": final.get("eval_map50", 0.0)}, args.command_line)
    if args.json:
        print(json.dumps(result))
    elif result.get("already_finished"):
        print(f"{result['run_dir']} is finished; resume with a larger --epochs or --time-budget to train longer")
    else:
        print(f"{config.model} Faster R-CNN: mAP@[.5:.95] {result['eval_map']:.2f}%, mAP@.5 "
              f"{result['eval_map50']:.2f}% after the last epoch on {result['eval_images']} images; weights: "
              f"{result['last_weights']}")


def cmd_eval(args: argparse.Namespace) -> None:
    from ..detection.data import DetectionSet, find_layout
    from ..detection.evaluate import evaluate_detector
    from ..detection.model import load_detector

    detector = load_detector(args.weights)
    if not (args.data_dir or args.images):
        raise ValueError("detect eval needs --data-dir (a data folder) or --images (and --annotations)")
    layout = find_layout(args.data_dir or args.images, args.annotations, train_split=args.split or "-",
                         test_split=args.split)
    images = args.images or layout.images
    dataset = DetectionSet(images, layout.annotations, layout.test_split, detector.class_names)
    result = evaluate_detector(detector, dataset, progress=not args.json)
    print(json.dumps(result) if args.json else
          f"mAP@[.5:.95] {result['map']:.2f}%, mAP@.5 {result['map50']:.2f}% on {result['images']} images "
          f"({result['detections']} detections)")


def cmd_predict(args: argparse.Namespace) -> None:
    from ..detection.model import load_detector
    from ..detection.predict import predict_images

    detector = load_detector(args.weights)
    for image, found in predict_images(detector, args.images, args.output, args.score_threshold).items():
        print(f"{image}: {len(found)} detection(s) -> {Path(args.output) / (Path(image).stem + '.png')}")
        for detection in found:
            box = ", ".join(f"{v:.1f}" for v in detection.box)
            print(f"  {detection.name} {detection.score:.3f} [{box}]")


def cmd_export(args: argparse.Namespace) -> None:
    from ..detection.export import export_detector
    from ..detection.model import load_detector

    diff, what = export_detector(load_detector(args.weights), args.output, args.backbone_only)
    print(f"wrote {args.output} ({what}); parity with PyTorch: max abs diff {diff:.2e}")


def register(commands: argparse._SubParsersAction) -> None:
    from ..detection.config import DetectConfig

    detect = commands.add_parser("detect", help="object detection with our backbones (Faster R-CNN)")
    tasks = detect.add_subparsers(dest="task", required=True)

    train = tasks.add_parser("train", help="train a detector (same trainer: resume, time budget, metrics)",
                             argument_default=argparse.SUPPRESS)
    add_config_options(train, DetectConfig)
    add_run_options(train)
    train.set_defaults(func=cmd_train)

    evaluate = tasks.add_parser("eval", help="mAP (pycocotools) of a detector weight file")
    evaluate.add_argument("weights", help="detector weight file from `shufflenet detect train`")
    evaluate.add_argument("--data-dir", help="the data folder, in a layout `detect train` takes")
    evaluate.add_argument("--images", help="images folder, when not in the data folder")
    evaluate.add_argument("--annotations", help="VOC XML folder or COCO JSON file, when not in the data folder")
    evaluate.add_argument("--split", help="split list (CSV with a filename column, or one name per line); default: "
                                          "the data folder's test (or val) list")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_eval)

    predict = tasks.add_parser("predict", help="boxes drawn on images (PNG) and printed")
    predict.add_argument("weights", help="detector weight file")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("-o", "--output", required=True, help="folder for the PNG files")
    predict.add_argument("--score-threshold", type=bounded(float, 0.0, 1.0), default=0.5,
                         help="keep detections at least this confident (default 0.5)")
    predict.set_defaults(func=cmd_predict)

    export = tasks.add_parser("export", help="ONNX of the detector (or of its backbone), checked against PyTorch")
    export.add_argument("weights", help="detector weight file")
    export.add_argument("-o", "--output", required=True, help="ONNX file to write")
    export.add_argument("--backbone-only", action="store_true", help="only the backbone (and its feature pyramid)")
    export.set_defaults(func=cmd_export)
