"""Training state (``checkpoint.pt`` in a run folder: model, optimiser, schedule, RNG states, position, config),
written atomically and read back with ``torch.load(weights_only=True)``.

Not to be confused with published checkpoints (``tensor_file``): this is our own trainer's resumable state.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from .atomic import write_atomically


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a half-written file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training state, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training state at {path}; pass --resume PATH to an existing checkpoint.pt or "
                         f"--resume auto")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, ...
        raise ValueError(f"{path} is not a readable shufflenet training state ({first_line(error)})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a shufflenet training state (no model/config entries)")
    return state
