"""The ``shufflenet`` command line: ``models``, ``profile``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

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
    add_convert_parser(commands)
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
