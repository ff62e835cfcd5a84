"""What the commands share: argument types that validate at the boundary, the data-set options, and the
parser whose errors are one line."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn

from ..data.sources import DATASETS


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: the problem, and where to read the options."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def bounded(kind: Callable[[str], Any], low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within ``[low, high]``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            span = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = bounded(int, 1)


def add_data_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """--data, --data-dir, --download, --no-md5-check (defaults: ``defaults``, else unset)."""
    unset = defaults.get("default", argparse.SUPPRESS)
    parser.add_argument("--data", choices=DATASETS, default=defaults.get("data", unset),
                        help="data set: digits (built in), cifar10, cifar100 or imagefolder")
    parser.add_argument("--data-dir", default=unset, help="data set folder (CIFAR files, or train/ + val/)")
    parser.add_argument("--download", action="store_true", default=unset, help="download CIFAR when missing")
    add_md5_argument(parser, unset)


def add_md5_argument(parser: argparse.ArgumentParser, default: Any = True) -> None:
    """``--no-md5-check`` for the commands that read CIFAR outside a training configuration (the training
    commands generate it from the configuration field, whose flag and help it takes)."""
    from dataclasses import fields

    from ..engine.config import TrainConfig, flag_of

    check = next(f for f in fields(TrainConfig) if f.name == "check_md5")
    parser.add_argument(flag_of(check).replace("--", "--no-", 1), dest="check_md5", action="store_false",
                        default=default, help=check.metadata["help"])
