"""``shufflenet eval``: accuracy of saved weights on the test split of a data set (on a GPU when there is one)."""
from __future__ import annotations

import argparse
import json

import torch

from ..data.sources import batches, open_dataset
from ..engine.evaluate import evaluate
from ..factory import load, model_runner
from ..text_table import format_table
from .common import add_data_arguments, bounded, positive_int


def cmd_eval(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load(args.model, args.weights) if args.model else load(args.weights)
    data = args.data or loaded.dataset
    if data is None:
        raise ValueError(f"{args.weights} does not record its data set; give --data")
    test_set, spec = open_dataset(data, "test", args.data_dir, download=args.download, check_md5=args.check_md5,
                                  transform=loaded.preprocessing.transform())
    if spec.num_classes != loaded.model.num_classes:
        raise ValueError(f"{args.weights} predicts {loaded.model.num_classes} classes but {data} has "
                         f"{spec.num_classes}; evaluate on the data set the weights were trained for")
    runner = model_runner(loaded.model.to(device), device, tta=args.tta)
    result = evaluate(runner, batches(test_set, args.batch_size, workers=args.workers), per_class=args.per_class,
                      progress=not args.json)
    result.update(model=loaded.name, data=data, device=device.type)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']} on {data} ({result['images']} test images, {device.type}): top-1 {result['top1']:.2f}% "
          f"(error {result['top1_err']:.2f}%), top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}, "
          f"{result['images_per_sec']:.0f} images/s")
    if args.per_class:
        names = spec.class_names or [str(i) for i in range(spec.num_classes)]
        print(format_table(("class", "top-1 %"), [(n, round(a, 2)) for n, a in zip(names, result["per_class"])]))


def register(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("eval", help="top-1/top-5 accuracy of saved weights on a data set's test split")
    ev.add_argument("model", nargs="?", help="registered model name (checked against the weights file)")
    ev.add_argument("--weights", required=True, help="safetensors file from training or `shufflenet convert`")
    add_data_arguments(ev, data=None, default=None)
    ev.set_defaults(download=False, check_md5=True)
    ev.add_argument("--batch-size", type=positive_int, default=256)
    ev.add_argument("--workers", type=bounded(int, 0), default=0)
    ev.add_argument("--tta", action="store_true", help="average the logits of each image and its mirror image")
    ev.add_argument("--per-class", action="store_true", help="also print the accuracy of every class")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=cmd_eval)
