"""``shufflenet models`` and ``shufflenet profile``: the registered models, their multiply-adds and parameters
(or their architecture tables), and ours beside every published figure."""
from __future__ import annotations

import argparse
import json

from ..experiments.table1 import HEADERS, profile_by_name, published_comparison
from ..models.builder import ROW_HEADERS, architecture_table
from ..models.registry import list_models, model_rows
from ..text_table import format_table
from .common import bounded


def cmd_models(args: argparse.Namespace) -> None:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}; try `shufflenet models` for the list")
    if args.arch:
        tables = [f"{name}\n{format_table(ROW_HEADERS, architecture_table(model_rows(name)))}"
                  for name in list_models(args.pattern, reference=False)]
        if not tables:
            raise ValueError(f"{args.pattern!r} matches only torchvision reference models, which have no table here")
        print("\n\n".join(tables))
        return
    rows = []
    for name in names:
        cost = profile_by_name(name)
        rows.append((name, round(cost.mflops, 2), cost.params))
    print(format_table(("model", "MFLOPs @224", "params"), rows))


def cmd_profile(args: argparse.Namespace) -> None:
    if args.paper:
        print(format_table(HEADERS, published_comparison()))
        return
    if not args.model:
        raise ValueError("give a model name (see `shufflenet models`) or --paper")
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


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="table of the registered models: MFLOPs at 224 and parameters")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'shufflenet_v1_*_g3'")
    models.add_argument("--arch", action="store_true",
                        help="print each model's architecture table (its rows: block, channels, repeats, stride)")
    models.set_defaults(func=cmd_models)

    prof = commands.add_parser("profile", help="multiply-adds and parameters of one model, or --paper")
    prof.add_argument("model", nargs="?", help="registered model name")
    prof.add_argument("--resolution", type=bounded(int, 1), default=224, help="square input size (default 224)")
    prof.add_argument("--per-layer", action="store_true", help="also list every conv and linear layer")
    prof.add_argument("--json", action="store_true", help="print one JSON object")
    prof.add_argument("--paper", action="store_true", help="our counts beside every published figure")
    prof.set_defaults(func=cmd_profile)
