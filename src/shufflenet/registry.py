"""Named models: ``create_model(name, **kwargs)`` and ``list_models(pattern)``, as in timm."""
from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .weights import WeightsFile, load_weights_into, read_weights


@dataclass(frozen=True)
class ModelSpec:
    """A registered name: the model class and the constructor arguments that the name fixes."""

    name: str
    cls: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def scale_tag(value: float) -> str:
    """The naming scheme's width tag: 1.0 -> 'x1_0', 0.25 -> 'x0_25'."""
    return "x" + str(float(value)).replace(".", "_")


def register_model(name: str, cls: type[nn.Module], **kwargs: Any) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(name, cls, kwargs)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; an unknown name raises a ``ValueError`` listing the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "see `shufflenet models` for the list"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (for example ``"shufflenet_v1_*_g3"``)."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def create_model(
    name: str,
    num_classes: int | None = None,
    weights: WeightsFile | str | os.PathLike | None = None,
    allow_classifier_reset: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``. Extra keyword arguments go to the model class (for example
    ``shuffle=False``, ``small_input=True``, ``features_only=True``, ``drop_rate=0.1``).

    ``weights``: a file from ``save_weights`` or ``shufflenet convert`` (or a plain state dict in our layout) to
    load. Its recorded arguments and class count are the defaults that ``kwargs`` and ``num_classes`` override;
    a different class count needs ``allow_classifier_reset=True`` (see ``weights.load_weights_into``). Without
    weights, ``num_classes`` defaults to 1000. The model records its name and arguments in ``model.arch``.
    """
    spec = get_model_spec(name)
    weights_file = weights if weights is None or isinstance(weights, WeightsFile) else read_weights(weights)
    if weights_file is not None:
        if weights_file.architecture == name:
            kwargs = {**weights_file.model_kwargs, **kwargs}
        if num_classes is None:
            num_classes = weights_file.num_classes
    clash = sorted(set(kwargs) & set(spec.kwargs))
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(clash)}; pick another model name instead of overriding it")
    model = spec.cls(num_classes=1000 if num_classes is None else num_classes, **spec.kwargs, **kwargs)
    model.arch = {"name": name, "kwargs": kwargs}
    if weights_file is not None:
        load_weights_into(model, weights_file, allow_classifier_reset=allow_classifier_reset)
    return model
