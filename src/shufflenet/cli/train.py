"""``shufflenet train``: every option generated from ``TrainConfig``'s fields, with their help text, in one
argument group per section of the configuration (model and data, optimisation, run)."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ..engine.config import RESUMABLE, Config, TrainConfig, field_type, flag_of
from ..errors import first_line
from ..factory import create_model
from ..io.atomic import check_writable
from ..io.results import write_result
from ..models.complexity import profile


def read_config_file(path: str) -> dict[str, Any]:
    """Training options from a YAML (.yaml/.yml) or TOML (.toml) file, keys as in ``TrainConfig``."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = file.read_text()
    try:
        if file.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as error:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise ValueError(f"config file {path} is not valid {'TOML' if file.suffix == '.toml' else 'YAML'}: "
                         f"{first_line(error)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of training options")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def config_file_values(path: str | None) -> dict[str, Any]:
    return read_config_file(path) if path else {}


def config_from_arguments(args: argparse.Namespace, config: type[Config] = TrainConfig) -> Config:
    """The command line over the config file over the recipe (options left unset are absent from ``args``)."""
    given = {f.name: getattr(args, f.name) for f in fields(config) if hasattr(args, f.name)}
    return config.from_dict({**config_file_values(args.config), **given})


def cmd_train(args: argparse.Namespace) -> None:
    from ..engine.trainer import train

    config = config_from_arguments(args)
    if args.record:
        check_writable(args.record)  # before the training, not after it
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun only the first process reports
        return
    if args.record:
        write_result(args.record, run_record(Path(result["run_dir"])), args.command_line)
    if args.json:
        print(json.dumps(result))
        return
    if result.get("already_finished"):
        print(f"{result['run_dir']} is finished (epoch {result.get('epoch')}, top-1 {result.get('eval_top1', 0):.2f}%);"
              f" resume with a larger --epochs or --time-budget to train longer")
        return
    model = create_model(config.model, weights=result["last_weights"])
    cost = profile(model, model.preprocessing.crop)
    print(f"{config.model}: top-1 {result['eval_top1']:.2f}% after the last epoch (best epoch "
          f"{result['best_score']:.2f}%), top-5 {result['eval_top5']:.2f}% on {result['eval_images']} test images; "
          f"{cost.mflops:.2f} MFLOPs at {model.preprocessing.crop}x{model.preprocessing.crop}, {cost.params:,} "
          f"parameters; weights: {result['last_weights']}")


def run_record(run_dir: Path) -> dict[str, Any]:
    """A run's configuration, every epoch's metrics and the last epoch's, for a result file."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return {"run": run_dir.name, "config": json.loads((run_dir / "config.json").read_text()), "metrics": rows,
            "final": rows[-1] if rows else {}}


def add_config_options(parser: argparse.ArgumentParser, config: type[Config] = TrainConfig) -> None:
    """One option per field of ``config`` (``--batch-size`` for ``batch_size``), typed and documented from the
    field, in one argument group per section; booleans get ``--x`` / ``--no-x``. Unset options stay absent, so
    config files and recipes fill them."""
    for section in config.sections():
        group = parser.add_argument_group(section.TITLE)
        for f in fields(section):
            meta, kind = f.metadata, field_type(f)
            default = "" if f.default in (MISSING, None) else f" (default {f.default})"
            choices = tuple(config.RECIPES) if f.name == "recipe" else meta["choices"]
            if f.default is MISSING and f.name == "model":
                group.add_argument(f.name, help=meta["help"])
            elif kind is bool:
                group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction,
                                   help=meta["help"] + default)
            else:
                group.add_argument(flag_of(f), dest=f.name, type=kind, choices=choices, required=f.default is MISSING,
                                   help=meta["help"] + default, metavar=None if choices else kind.__name__.upper())


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model (one CPU, a GPU, or many through torchrun)",
                                argument_default=argparse.SUPPRESS,
                                description="Train a model. Options left unset come from --config, then from the "
                                            "recipe (small for 32x32 data, imagenet otherwise).")
    add_config_options(train)
    add_run_options(train)
    train.set_defaults(func=cmd_train)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a run that are not training settings: config file, resume, overwrite, output."""
    parser.add_argument("--config", default=None, help="YAML or TOML file of options (the command line wins)")
    parser.add_argument("--resume", default=None,
                        help="a training state (checkpoint.pt), or 'auto' for the run folder's; a resume may change "
                             "only " + ", ".join("--" + key.replace("_", "-") for key in RESUMABLE))
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="replace the run folder's earlier run (otherwise refused)")
    parser.add_argument("--json", action="store_true", default=False, help="print the final result as JSON")
    parser.add_argument("--record", default=None, help="also write a result file (command, machine, CPU flags, "
                                                       "date, configuration, every epoch's metrics) here")
