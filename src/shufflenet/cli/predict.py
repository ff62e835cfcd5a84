"""``shufflenet predict``: the top classes of image files."""
from __future__ import annotations

import argparse
import sys

from ..deploy.predict import predict
from ..factory import load
from .common import positive_int


def cmd_predict(args: argparse.Namespace) -> None:
    loaded = load(args.model, args.weights)
    if loaded.random_weights:
        print(f"warning: {args.model} has no weights (randomly initialised): its predictions mean nothing; pass "
              f"--weights FILE", file=sys.stderr)
    for image, classes in zip(args.images, predict(loaded, args.images, args.top)):
        print(f"{image}:")
        for rank, (name, probability) in enumerate(classes, 1):
            print(f"  {rank}. {name} ({100 * probability:.2f}%)")


def register(commands: argparse._SubParsersAction) -> None:
    pred = commands.add_parser("predict", help="top-5 classes of images")
    pred.add_argument("model", help="registered model name, a weight file, or an exported .onnx or .pte file")
    pred.add_argument("images", nargs="+", help="image files")
    pred.add_argument("--weights", help="safetensors weights file (with its recorded preprocessing)")
    pred.add_argument("--top", type=positive_int, default=5)
    pred.set_defaults(func=cmd_predict)
