"""The ``shufflenet`` command: one module per command; bad input ends in one line on stderr and exit code 2."""
from __future__ import annotations

import shlex
import sys
from typing import Sequence

from . import bench, convert, detect, evaluate, export, models, predict, reproduce, train
from .common import Parser

COMMANDS = (models, train, evaluate, convert, export, bench, predict, reproduce, detect)


def build_parser() -> Parser:
    parser = Parser(prog="shufflenet", description="ShuffleNet V1 and its baselines: models, complexity, training, "
                                                   "evaluation, conversion, export, benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..engine.trainer import TrainingDiverged, TrainingStopped

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a bad option (already reported in one line)
        return int(stop.code or 0)
    args.command_line = shlex.join(["shufflenet", *argv])  # recorded in result files
    prefix = f"shufflenet {args.command}: error:"
    try:
        args.func(args)
    except (ValueError, OSError) as error:  # bad input, unreadable or unwritable files: one line, no traceback
        print(f"{prefix} {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 1
    except (TrainingStopped, KeyboardInterrupt) as error:
        again = "run the same command again to go on" if args.command == "reproduce" else "continue with --resume auto"
        print(f"shufflenet {args.command}: {error or 'interrupted'}; {again}", file=sys.stderr)
        return 3
    return 0
