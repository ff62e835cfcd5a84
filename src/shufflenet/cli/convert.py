"""``shufflenet convert``: a published checkpoint into our weight file."""
from __future__ import annotations

import argparse

from ..convert import SOURCE_FORMATS, convert_checkpoint
from ..io.atomic import check_writable
from .common import positive_int


def cmd_convert(args: argparse.Namespace) -> None:
    check_writable(args.dst)
    conversion = convert_checkpoint(args.src, args.dst, args.source_format, args.model, args.resize)
    print(f"converted {args.source_format} checkpoint {args.src} -> {args.dst}")
    print(conversion.summary())


def register(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="official megvii / torchvision / timm checkpoint -> our weight file")
    convert.add_argument("src", help="the downloaded checkpoint (.pth, .pth.tar, .bin or .safetensors)")
    convert.add_argument("dst", help="the safetensors file to write")
    convert.add_argument("--from", dest="source_format", required=True, choices=SOURCE_FORMATS,
                         help="who published the checkpoint")
    convert.add_argument("--model", help="registered model name (default: inferred from the tensor shapes)")
    convert.add_argument("--resize", type=positive_int, help="resize size to record (torchvision IMAGENET1K_V2: 232)")
    convert.set_defaults(func=cmd_convert)
