"""The training configuration, in sections that each task composes: ``RunSection`` (how a run is carried out:
its folder, length, seed, processes and threads), ``OptimSection`` (the optimiser and its schedule) and a task's
own data-and-model section (``ClassificationSection`` here, ``detection.config.DetectionSection`` for
detectors). Every field has its help text and its valid range; the command line's argument groups, config files
and the experiment grids all read the same fields, and share the one validation.

A configuration is flat (``config.epochs``, ``config.lr``): the sections are dataclasses that a task's config
inherits from, so ``config.json``, config files and the command line keep one key per field.
"""
from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from ..data.sources import DATASETS, DataSpec
from ..models.registry import model_spec

SCHEDULES = ("linear", "cosine")
# What a resume may change (the rest would make the resumed run a different experiment): the length, the peak
# learning rate (e.g. lower after a divergence), and how the work is run.
RESUMABLE = ("epochs", "time_budget", "lr", "threads", "workers", "compile", "device")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, choices: tuple[str, ...] | None = None,
           flag: str | None = None) -> Any:
    """A config field with its command-line help and its valid range: ``low <= value <= high`` (strict where
    ``low_open`` / ``high_open``) or one of ``choices``; None is always allowed and means "from the recipe".
    ``flag``: the command-line name when it is not the field's (``md5-check`` gives ``--no-md5-check``)."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                                            "high_open": high_open, "choices": choices, "flag": flag})


@dataclass(kw_only=True)
class RunSection:
    """How a run is carried out: where it is kept, how long it trains, on what."""

    TITLE: ClassVar[str] = "run"

    output: str = option("runs", "folder that holds the run folders")
    name: str | None = option(None, "run folder under --output (default: MODEL-DATA)")
    epochs: int | None = option(None, "epochs to train (an upper bound with --time-budget)", low=1)
    time_budget: float | None = option(None, "minutes of training (evaluation excluded): the schedule then runs on "
                                             "the clock and reaches 0 when the budget is spent", low=0, low_open=True)
    eval_every: int = option(1, "evaluate after every N-th epoch (and after the last)", low=1)
    seed: int = option(0, "random seed (initialisation, data order, augmentation)", low=0)
    device: str | None = option(None, "cpu or cuda (default: cuda when a GPU is visible, else cpu)",
                                choices=("cpu", "cuda"))
    compile: bool = option(False, "torch.compile the model")
    amp: bool = option(True, "automatic mixed precision on CUDA (bfloat16 where the GPU has it, else float16)")
    channels_last: bool = option(True, "channels_last memory format")
    threads: int | None = option(None, "CPU threads per process", low=1)
    workers: int | None = option(None, "data loader processes (default: 0 for in-memory data, else min(8, cores))",
                                 low=0)
    max_steps_per_epoch: int | None = option(None, "cut every epoch to this many steps (smoke tests)", low=1)


@dataclass(kw_only=True)
class OptimSection:
    """The optimiser (SGD with momentum) and its learning-rate schedule; a recipe fills the unset fields."""

    TITLE: ClassVar[str] = "optimisation"

    recipe: str | None = option(None, "defaults for the unset fields (the task's recipes: small for 32x32 data and "
                                      "imagenet for classifiers, detection for detectors)")
    batch_size: int | None = option(None, "global batch, split over the processes", low=1)
    lr: float | None = option(None, "peak learning rate at --lr-reference-batch, scaled linearly with the batch",
                              low=0, low_open=True)
    lr_reference_batch: int | None = option(None, "batch size at which --lr is given", low=1)
    momentum: float = option(0.9, "SGD momentum", low=0, high=1, high_open=True)
    nesterov: bool | None = option(None, "Nesterov momentum")
    weight_decay: float | None = option(None, "weight decay on conv and linear weights (not BN, not biases)", low=0)
    schedule: str | None = option(None, "learning-rate decay to 0 after the warm-up", choices=SCHEDULES)
    warmup_epochs: float | None = option(None, "linear warm-up length in epochs", low=0)
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights with this decay "
                                           "(e.g. 0.9998); evaluation and saved weights then use it",
                                     low=0, high=1, low_open=True, high_open=True)


@dataclass(kw_only=True)
class Config:
    """What every task's configuration shares: validation, recipes, the default run name, resume rules."""

    RECIPES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def sections(cls) -> list[type]:
        """The sections this configuration is made of, task section first (each becomes an argument group)."""
        return [base for base in cls.__mro__ if "TITLE" in base.__dict__]

    def validate(self) -> None:
        """Raise a one-line ``ValueError`` for a value of the wrong type or out of its field's range."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                if f.default is MISSING:
                    raise ValueError(f"{f.name} is required")
                continue
            expected = field_type(f)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be {expected.__name__}, got {value!r}")
            if meta["choices"] and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            low, high = meta["low"], meta["high"]
            if low is not None and (value < low or (meta["low_open"] and value == low)):
                raise ValueError(f"{f.name} must be {'>' if meta['low_open'] else '>='} {low}, got {value}")
            if high is not None and (value > high or (meta["high_open"] and value == high)):
                raise ValueError(f"{f.name} must be {'<' if meta['high_open'] else '<='} {high}, got {value}")
        if self.recipe is not None and self.recipe not in self.RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(self.RECIPES)}, got {self.recipe!r}")
        if self.name is not None and not RUN_NAME.match(self.name):
            raise ValueError(f"run name {self.name!r} must be a plain folder name (letters, digits, . _ = + -, no "
                             f"path separators), so that the run stays inside --output")

    def run_name(self) -> str:
        """The run folder's name: ``--name``, else the task's default (the one place it is computed)."""
        return self.name or self.default_name()

    def default_name(self) -> str:
        raise NotImplementedError

    def default_recipe(self, spec: DataSpec) -> str:
        raise NotImplementedError

    def resolved(self, spec: DataSpec) -> Config:
        """Every unset field filled from the recipe for this data, and the run name fixed."""
        values = asdict(self)
        values["recipe"] = self.recipe or self.default_recipe(spec)
        for key, default in self.RECIPES[values["recipe"]].items():
            if values[key] is None:
                values[key] = default
        values["name"] = self.run_name()
        return type(self)(**values)

    def changes_from(self, saved: Config) -> dict[str, tuple[Any, Any]]:
        """Fields set here (to other than their default) that differ from ``saved``: {name: (saved, new)}."""
        return {f.name: (getattr(saved, f.name), getattr(self, f.name)) for f in fields(self)
                if f.name not in ("output", "name") and getattr(self, f.name) != f.default
                and getattr(self, f.name) != getattr(saved, f.name)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


@dataclass(kw_only=True)
class ClassificationSection:
    """What a classifier is trained on and what it is."""

    TITLE: ClassVar[str] = "model and data"

    model: str = option(MISSING, "registered model name (see `shufflenet models`)")
    model_args: str | None = option(None, "more model arguments as a JSON object, e.g. '{\"shuffle\": false}'")
    small_input: bool | None = option(None, "stride-1 stem for 32x32 images (default: on for 32x32 data, for our "
                                            "families)")
    drop_rate: float | None = option(None, "dropout before the classifier", low=0, high=1, high_open=True)
    data: str = option("digits", "data set", choices=DATASETS)
    data_dir: str | None = option(None, "data set folder (CIFAR files, or train/ + val/)")
    download: bool = option(False, "download CIFAR when missing (needs a network)")
    check_md5: bool = option(True, "check CIFAR files against the official MD5 sums (--no-md5-check: load a "
                                   "faithful copy whose files hold the images in another order)", flag="md5-check")
    label_smoothing: float | None = option(None, "label smoothing of the cross-entropy", low=0, high=1, high_open=True)
    tta: bool = option(False, "the last evaluation also with test-time augmentation: the mean of the logits of "
                              "each image and its mirror image")


@dataclass(kw_only=True)
class TrainConfig(ClassificationSection, OptimSection, RunSection, Config):
    """A classifier's training run."""

    # Recipes (in words: ``recipe_text``). "imagenet": ShuffleNet Sec. 4 and the official train.py (its 300k
    # iterations at batch 1024 are ~240 epochs). "small": ours, for 32x32 data.
    RECIPES: ClassVar[dict[str, dict[str, Any]]] = {
        "imagenet": dict(epochs=240, batch_size=1024, lr=0.5, lr_reference_batch=1024, nesterov=False,
                         weight_decay=4e-5, schedule="linear", warmup_epochs=0.0, label_smoothing=0.1),
        "small": dict(epochs=30, batch_size=256, lr=0.3, lr_reference_batch=256, nesterov=True, weight_decay=5e-4,
                      schedule="cosine", warmup_epochs=1.0, label_smoothing=0.1),
    }

    def validate(self) -> None:
        super().validate()
        if self.model_args is not None:
            self.model_kwargs()

    def default_name(self) -> str:
        return f"{self.model}-{self.data}"

    def default_recipe(self, spec: DataSpec) -> str:
        return "small" if spec.small_images else "imagenet"

    def resolved(self, spec: DataSpec) -> TrainConfig:
        config = super().resolved(spec)
        if config.small_input is None:  # our families take it; torchvision's reference models do not
            config.small_input = spec.small_images and not model_spec(self.model).reference
        return config

    def model_kwargs(self) -> dict[str, Any]:
        """``model_args`` parsed: a JSON object of model arguments ({} when unset)."""
        if self.model_args is None:
            return {}
        try:
            values = json.loads(self.model_args)
        except json.JSONDecodeError as error:
            raise ValueError(f"model_args must be a JSON object, e.g. '{{\"shuffle\": false}}' ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"model_args must be a JSON object, got {self.model_args!r}")
        return values


def recipe_text(recipe: dict[str, Any]) -> str:
    """A recipe in words, for reports: 'SGD Nesterov, batch 256, lr 0.3 cosine after a 1-epoch warm-up, ...'."""
    warmup = recipe["warmup_epochs"]
    return (f"SGD{' Nesterov' if recipe['nesterov'] else ''}, batch {recipe['batch_size']}, lr {recipe['lr']} "
            f"{recipe['schedule']}" + (f" after a {warmup:g}-epoch warm-up" if warmup else "")
            + f", weight decay {recipe['weight_decay']:g}"
            + (f", label smoothing {recipe['label_smoothing']:g}" if recipe.get("label_smoothing") else ""))


def flag_of(f: Any) -> str:
    """A field's command-line option: ``--batch-size`` for ``batch_size`` (or its ``flag``)."""
    return "--" + (f.metadata["flag"] or f.name.replace("_", "-"))


def field_type(f: Any) -> type:
    """The value type of a field annotated ``T`` or ``T | None``."""
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type).split(" |")[0]]
