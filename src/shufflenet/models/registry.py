"""Named models, as in timm: ``register_model``, ``list_models(pattern)``, ``build_model(name, **kwargs)``.

This registry only builds networks; loading weights into them is ``shufflenet.create_model`` /
``shufflenet.load`` (``shufflenet.factory``), one layer up.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .builder import Row


@dataclass(frozen=True)
class ModelSpec:
    """A registered name: the function that builds it, the arguments that the name fixes, and whether it is a
    torchvision reference model (measured beside ours; it has torchvision's interface, not ours)."""

    name: str
    factory: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    reference: bool = False


_REGISTRY: dict[str, ModelSpec] = {}


def scale_tag(value: float) -> str:
    """The naming scheme's width tag: 1.0 -> 'x1_0', 0.25 -> 'x0_25'."""
    return "x" + str(float(value)).replace(".", "_")


def register_model(name: str, factory: Callable[..., nn.Module], *, reference: bool = False, **kwargs: Any) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(name, factory, kwargs, reference)


def model_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; an unknown name raises a ``ValueError`` listing the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "see `shufflenet models` for the list"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def list_models(pattern: str = "*", reference: bool = True) -> list[str]:
    """Registered names matching the shell-style ``pattern`` (e.g. ``"shufflenet_v1_*_g3"``); ``reference=False``
    leaves out the torchvision reference models."""
    return sorted(name for name, spec in _REGISTRY.items()
                  if fnmatch.fnmatchcase(name, pattern) and (reference or not spec.reference))


def build_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """A freshly initialised ``name``; ``kwargs`` go to its factory (``small_input=True``, ``features_only=True``,
    ...). The model's record (``model.record``, a ``ModelRecord``) gets its name and these arguments (weight
    files store them)."""
    spec = model_spec(name)
    clash = sorted(set(kwargs) & set(spec.kwargs))
    if clash:
        raise ValueError(f"{name!r} fixes {', '.join(clash)}; pick another model name instead of overriding it")
    try:
        model = spec.factory(num_classes=num_classes, **spec.kwargs, **kwargs)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ValueError(f"{name} takes no such option: {error}") from None
    model.record = model.record.replace(architecture=name, kwargs=kwargs)
    return model


def model_rows(name: str) -> list[Row]:
    """The architecture table (rows) of ``name``, without building the model."""
    spec = model_spec(name)
    if spec.reference:
        raise ValueError(f"{name} is a torchvision reference model; it has no architecture table here")
    return spec.factory.architecture(**spec.kwargs)
