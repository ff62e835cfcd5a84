"""Published checkpoints into our weight files: megvii ShuffleNet V1, torchvision MobileNet V2, timm MobileNet
V1/V2; one module per source.

Each source's tensors are renamed to our keys; the registered model whose tensor shapes they fit is found (or
checked, with ``model_name``); ShuffleNet's channel order is remapped (docs/weights.md). The result must load
into that model with every tensor fitting before ``save_weights`` writes anything.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..io.tensor_file import listing, read_tensor_file, unwrap_state_dict
from ..io.weight_file import save_weights
from ..models.registry import build_model
from . import megvii, timm, torchvision
from .common import Conversion, fill_bn_counters, find_model

SOURCES = {"megvii": megvii, "torchvision": torchvision, "timm": timm}
SOURCE_FORMATS = tuple(SOURCES)


def convert_state_dict(checkpoint: Any, source_format: str, model_name: str | None = None) -> Conversion:
    """Convert a loaded source checkpoint (a state dict, or a dict holding one under 'state_dict' / 'model';
    ``module.`` prefixes allowed) into our layout for ``model_name`` (default: the registered model whose
    shapes the tensors fit)."""
    if source_format not in SOURCES:
        raise ValueError(f"unknown source format {source_format!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    state, skipped = unwrap_state_dict(checkpoint, f"the {source_format} checkpoint")
    source = SOURCES[source_format]
    if source.SIGNATURE_KEY not in state:
        others = [name for name, module in SOURCES.items() if module.SIGNATURE_KEY in state]
        hint = (f"it looks like a {others[0]} checkpoint: use --from {others[0]}" if others else
                f"its first keys are {', '.join(list(state)[:3])}")
        raise ValueError(f"this is not a {source_format} checkpoint (it has no {source.SIGNATURE_KEY!r}); {hint}")
    renamed = source.rename(state)
    if renamed.unknown:
        raise ValueError(f"these {source_format} tensors have no place in our models: {listing(renamed.unknown)}")
    filled = fill_bn_counters(renamed.state)
    name = find_model(renamed.state, renamed.pattern, renamed.model_kwargs, model_name, renamed.hint)
    kwargs = renamed.model_kwargs
    notes = [f"added {filled} missing BN num_batches_tracked counters (zeros)"] if filled else []
    if source is megvii:
        kwargs, order_notes = megvii.remap_units(renamed.state, name)
        notes += order_notes
    num_classes = renamed.state["classifier.weight"].shape[0] if "classifier.weight" in renamed.state else 0
    return Conversion(source_format, name, kwargs, num_classes, renamed.state, renamed.preprocessing, skipped, notes)


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    source_format: str,
    model_name: str | None = None,
    resize: int | None = None,
) -> Conversion:
    """Read ``source`` (safetensors, or a PyTorch checkpoint via ``torch.load(weights_only=True)``), convert it,
    load it into the model (every tensor must fit) and write ``destination`` with ``save_weights``. ``resize``
    overrides the recorded resize size (torchvision's IMAGENET1K_V2 weights are evaluated at 232)."""
    checkpoint, _ = read_tensor_file(source)
    try:
        conversion = convert_state_dict(checkpoint, source_format, model_name)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if resize is not None:
        conversion.preprocessing = replace(conversion.preprocessing, resize=resize)
    model = build_model(conversion.model_name, conversion.num_classes, **conversion.model_kwargs)
    model.load_state_dict(conversion.state_dict)
    save_weights(model, destination, preprocessing=conversion.preprocessing,
                 source=f"{source_format} checkpoint {Path(source).name}")
    return conversion


__all__ = ["SOURCE_FORMATS", "Conversion", "convert_checkpoint", "convert_state_dict"]
