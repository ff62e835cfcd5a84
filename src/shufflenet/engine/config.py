"""The training configuration: every field with its help text and its valid range, the recipes that fill the
fields left unset, and the one validation that the command line, config files and experiment grids share."""
from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..data.sources import DATASETS, DataSpec
from ..models.registry import model_spec

# Recipes. "imagenet": ShuffleNet Sec. 4 and the official train.py: SGD momentum 0.9, lr 0.5 at batch 1024 scaled
# linearly with the batch, weight decay 4e-5 on conv/linear weights only, linear decay to 0, label smoothing 0.1,
# 300k iterations at batch 1024 (~240 epochs). "small" (32x32 data, ours): SGD Nesterov, lr 0.3 at batch 256,
# cosine to 0 after a 1-epoch warm-up, weight decay 5e-4, label smoothing 0.1.
RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": dict(epochs=240, batch_size=1024, lr=0.5, lr_reference_batch=1024, nesterov=False, weight_decay=4e-5,
                     schedule="linear", warmup_epochs=0.0, label_smoothing=0.1),
    "small": dict(epochs=30, batch_size=256, lr=0.3, lr_reference_batch=256, nesterov=True, weight_decay=5e-4,
                  schedule="cosine", warmup_epochs=1.0, label_smoothing=0.1),
    # Detectors (ours, for a CPU): torchvision's detection reference lr 0.02 at batch 16, momentum 0.9, weight
    # decay 1e-4; cosine after a 1-epoch warm-up.
    "detection": dict(epochs=24, batch_size=4, lr=0.02, lr_reference_batch=16, nesterov=False, weight_decay=1e-4,
                      schedule="cosine", warmup_epochs=1.0, label_smoothing=0.0),
}
SCHEDULES = ("linear", "cosine")
# What a resume may change (the rest would make the resumed run a different experiment): the length, the peak
# learning rate (e.g. lower after a divergence), and how the work is run.
RESUMABLE = ("epochs", "time_budget", "lr", "threads", "workers", "compile")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its command-line help and its valid range: ``low <= value <= high`` (strict where
    ``low_open`` / ``high_open``) or one of ``choices``; None is always allowed and means "from the recipe"."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                                            "high_open": high_open, "choices": choices})


@dataclass
class TrainConfig:
    model: str = option(MISSING, "registered model name (see `shufflenet models`)")
    model_args: str | None = option(None, "more model arguments as a JSON object, e.g. '{\"shuffle\": false}'")
    data: str = option("digits", "data set", choices=DATASETS)
    data_dir: str | None = option(None, "data set folder (CIFAR files, or train/ + val/)")
    download: bool = option(False, "download CIFAR when missing (needs a network)")
    check_md5: bool = option(True, "check CIFAR files against the official MD5 sums (--no-md5-check for a "
                                   "faithful copy in another order)")
    recipe: str | None = option(None, "defaults for the unset fields: small (32x32 data) or imagenet",
                                choices=("small", "imagenet"))
    epochs: int | None = option(None, "epochs to train (an upper bound with --time-budget)", low=1)
    batch_size: int | None = option(None, "global batch, split over the processes", low=1)
    lr: float | None = option(None, "peak learning rate at --lr-reference-batch, scaled linearly with the batch",
                              low=0, low_open=True)
    lr_reference_batch: int | None = option(None, "batch size at which --lr is given", low=1)
    momentum: float = option(0.9, "SGD momentum", low=0, high=1, high_open=True)
    nesterov: bool | None = option(None, "Nesterov momentum")
    weight_decay: float | None = option(None, "weight decay on conv and linear weights (not BN, not biases)", low=0)
    schedule: str | None = option(None, "learning-rate decay to 0 after the warm-up", choices=SCHEDULES)
    warmup_epochs: float | None = option(None, "linear warm-up length in epochs", low=0)
    label_smoothing: float | None = option(None, "label smoothing of the cross-entropy", low=0, high=1, high_open=True)
    small_input: bool | None = option(None, "stride-1 stem for 32x32 images (default: on for 32x32 data, for our "
                                            "families)")
    drop_rate: float | None = option(None, "dropout before the classifier", low=0, high=1, high_open=True)
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights with this decay "
                                           "(e.g. 0.9998); evaluation and saved weights then use it",
                                     low=0, high=1, low_open=True, high_open=True)
    tta: bool = option(False, "the last evaluation also with test-time augmentation: the mean of the logits of "
                              "each image and its mirror image")
    eval_every: int = option(1, "evaluate after every N-th epoch (and after the last)", low=1)
    compile: bool = option(False, "torch.compile the model")
    amp: bool = option(True, "automatic mixed precision (CUDA only)")
    channels_last: bool = option(True, "channels_last memory format")
    workers: int | None = option(None, "data loader processes (default: 0 for in-memory data, else min(8, cores))",
                                 low=0)
    seed: int = option(0, "random seed (initialisation, data order, augmentation)", low=0)
    output: str = option("runs", "folder that holds the run folders")
    name: str | None = option(None, "run folder under --output (default: MODEL-DATA)")
    max_steps_per_epoch: int | None = option(None, "cut every epoch to this many steps (smoke tests)", low=1)
    time_budget: float | None = option(None, "minutes of training (evaluation excluded): the schedule then runs on "
                                             "the clock and reaches 0 when the budget is spent", low=0, low_open=True)
    threads: int | None = option(None, "CPU threads per process", low=1)

    def __post_init__(self) -> None:
        self.validate()

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
        if self.model_args is not None:
            self.model_kwargs()
        if self.name is not None and not RUN_NAME.match(self.name):
            raise ValueError(f"run name {self.name!r} must be a plain folder name (letters, digits, . _ = + -, no "
                             f"path separators), so that the run stays inside --output")

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

    def resolved(self, spec: DataSpec) -> TrainConfig:
        """Every unset field filled from the recipe for this data set."""
        values = asdict(self)
        values["recipe"] = self.recipe or self.default_recipe(spec)
        for key, default in RECIPES[values["recipe"]].items():
            if values[key] is None:
                values[key] = default
        if values["small_input"] is None:  # our families take it; torchvision's reference models do not
            values["small_input"] = spec.small_images and not model_spec(self.model).reference
        values["name"] = values["name"] or f"{self.model}-{spec.name}"
        return type(self)(**values)

    def default_recipe(self, spec: DataSpec) -> str:
        return "small" if spec.small_images else "imagenet"

    def changes_from(self, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields set here (to other than their default) that differ from ``saved``: {name: (saved, new)}."""
        return {f.name: (getattr(saved, f.name), getattr(self, f.name)) for f in fields(self)
                if f.name not in ("output", "name") and getattr(self, f.name) != f.default
                and getattr(self, f.name) != getattr(saved, f.name)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def field_type(f: Any) -> type:
    """The value type of a field annotated ``T`` or ``T | None``."""
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type).split(" |")[0]]
