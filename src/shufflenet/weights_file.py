"""A model for inference by name, optionally with the tensors and preprocessing of a weights file.

Weights files are safetensors (issue 3's ``save_weights``): tensors that never execute code, plus string
metadata. Read here: ``preprocessing`` (JSON of :class:`Preprocessing` fields), ``num_classes`` and
``model_kwargs`` (JSON, e.g. ``{"small_input": true}``); anything missing takes the defaults (the class count
is then read off the classifier's weight).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .preprocessing import Preprocessing
from .reference_models import REFERENCE_MODELS, create_reference_model
from .registry import create_model


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file, with a clear error for anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors weights file ({error}); convert checkpoints with "
            f"`shufflenet convert` first"
        ) from None


def load_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
               **kwargs: Any) -> tuple[nn.Module, Preprocessing]:
    """``(model, preprocessing)`` in eval mode: ``name`` from the registry (or a ``tv_`` reference model),
    randomly initialised without ``weights``; with them, loaded strictly and with the recorded preprocessing."""
    if weights is None:
        if name in REFERENCE_MODELS:
            return create_reference_model(name, num_classes or 1000).eval(), Preprocessing()
        return create_model(name, num_classes=num_classes or 1000, **kwargs).eval(), Preprocessing()
    tensors, metadata = read_weights(weights)
    recorded_model = metadata.get("model") or metadata.get("architecture")
    if recorded_model and recorded_model != name:
        raise ValueError(f"{weights} holds weights for {recorded_model!r}, not {name!r}; pass --model {recorded_model}")
    kwargs = {**json.loads(metadata.get("model_kwargs", "{}")), **kwargs}
    if num_classes is None:
        num_classes = int(metadata["num_classes"]) if "num_classes" in metadata else (
            tensors["classifier.weight"].shape[0] if "classifier.weight" in tensors else 1000)
    model = create_model(name, num_classes=num_classes, **kwargs)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors, each named by PyTorch
        raise ValueError(f"{weights} does not fit {name} with {num_classes} classes: {error}") from None
    preprocessing = metadata.get("preprocessing")
    return model.eval(), Preprocessing.from_dict(json.loads(preprocessing) if preprocessing else None)
