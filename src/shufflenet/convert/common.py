"""What every converter shares: the converted result, renaming keys one by one, and finding the registered
model whose tensor shapes the renamed checkpoint fits."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..data.preprocessing import Preprocessing
from ..io.tensor_file import compare_tensors, shapes
from ..models.registry import build_model, list_models, model_spec


@dataclass(frozen=True)
class Renamed:
    """A source checkpoint's tensors under our names, and where to look for the model that holds them."""

    state: dict[str, torch.Tensor]
    unknown: list[str]  # source keys with no place in our models
    pattern: str  # registered names to try
    preprocessing: Preprocessing  # what the source's weights expect
    hint: str  # said when no registered model fits
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversion:
    """A converted state dict in our layout and what it is for."""

    source_format: str
    model_name: str
    model_kwargs: dict[str, Any]
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    skipped: list[str] = field(default_factory=list)  # checkpoint entries that are not model tensors
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        arguments = f", arguments {self.model_kwargs}" if self.model_kwargs else ""
        lines = [
            f"model: {self.model_name} ({self.num_classes} classes{arguments})",
            f"mapped {len(self.state_dict)} tensors; skipped: {', '.join(self.skipped) or 'none'}",
            *(f"note: {note}" for note in self.notes),
            f"preprocessing: {self.preprocessing.describe()}",
        ]
        return "\n".join(lines)


def rename_each(state: dict[str, torch.Tensor], rename: Callable[[str], str | None]) -> tuple[dict, list[str]]:
    renamed, unknown = {}, []
    for key, tensor in state.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = tensor
    return renamed, unknown


def find_model(
    state: dict[str, torch.Tensor], pattern: str, kwargs: dict[str, Any], requested: str | None, hint: str
) -> str:
    """The registered model (matching ``pattern``, or ``requested``) whose tensors have exactly these shapes."""
    if requested is not None:
        model_spec(requested)  # an unknown name: ValueError with close matches
        if requested not in list_models(pattern):
            raise ValueError(f"{requested} cannot hold these tensors: they are for {pattern} models")
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    found = shapes(state)
    problems = {}
    for name in [requested] if requested else list_models(pattern):
        with torch.device("meta"):
            model = build_model(name, num_classes, **kwargs)
        problems[name] = compare_tensors(shapes(model.state_dict()), found)
    fits = [name for name, mismatch in problems.items() if not mismatch]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ValueError(f"the tensors fit several models ({', '.join(fits)}); choose one with --model")
    if requested:
        raise ValueError(f"the tensors do not fit {requested}: {problems[requested]}")
    closest = min(problems, key=lambda name: len(problems[name]))
    raise ValueError(
        f"no registered model fits these tensors (the closest, {closest}, differs in: {problems[closest]}). {hint}"
    )


def fill_bn_counters(state: dict[str, torch.Tensor]) -> int:
    """Add the ``num_batches_tracked`` counters that some checkpoints leave out (they do not affect outputs)."""
    missing = [key[: -len("running_mean")] + "num_batches_tracked" for key in state if key.endswith(".running_mean")]
    missing = [key for key in missing if key not in state]
    for key in missing:
        state[key] = torch.tensor(0)
    return len(missing)
