"""Training checkpoints: written atomically, read without unpickling arbitrary objects."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .files import write_atomically


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a half-written file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getvalue())


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

