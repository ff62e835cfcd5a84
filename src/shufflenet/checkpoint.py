"""Training checkpoints: written atomically, read without unpickling arbitrary objects."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}; pass --resume PATH to an existing checkpoint.pt or --resume auto")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, ...
        raise ValueError(f"{path} is not a readable shufflenet checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"{path} is not a shufflenet training checkpoint (no model/config entries)")
    return checkpoint


def save_inference_weights(model: torch.nn.Module, path: str | Path, config: Any, spec: Any) -> None:
    """The trained weights as safetensors, with what rebuilds the model (name, kwargs, classes) and the
    preprocessing they expect (RGB, 0-1 then mean/std, resize/crop) as metadata. Atomic."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    kwargs = {"small_input": config.small_input} if config.model.startswith("shufflenet") else {}
    metadata = {
        "architecture": config.model,
        "kwargs": json.dumps(kwargs),
        "num_classes": str(spec.num_classes),
        "class_names": json.dumps(spec.class_names),
        "preprocessing": json.dumps({"channel_order": "RGB", "scale": 1 / 255, "mean": spec.mean, "std": spec.std,
                                     "resize": spec.resize_size, "crop": spec.image_size}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_inference_weights(name: str | None, path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_inference_weights`; ``name`` (if given) must match the file's."""
    import json

    from safetensors import SafetensorError, safe_open

    from .registry import create_model

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    if "architecture" not in metadata:
        raise ValueError(f"{path} has no architecture metadata; convert it with `shufflenet convert` first")
    if name is not None and name != metadata["architecture"]:
        raise ValueError(f"{path} holds weights for {metadata['architecture']}, not {name}")
    model = create_model(metadata["architecture"], num_classes=int(metadata["num_classes"]),
                         **json.loads(metadata.get("kwargs", "{}")))
    model.load_state_dict(state)
    return model, {k: json.loads(v) if k in ("kwargs", "class_names", "preprocessing") else v
                   for k, v in metadata.items()}
