"""Tensor files from anywhere (published checkpoints, our weight files, plain state dicts), read without
running code from them, and the comparison of their tensors' shapes with a model's.

A safetensors file is recognised by its header, not its name. Anything else goes through
``torch.load(weights_only=True)``, which refuses everything but tensors and plain containers, so opening a
file never unpickles arbitrary objects.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import safetensors
import torch

from ..errors import first_line

# Entries under which training scripts store the model's state dict (megvii train.py: 'state_dict';
# torchvision's and timm's training scripts: 'model' / 'state_dict').
STATE_DICT_ENTRIES = ("state_dict", "model")
SHOWN_NAMES = 8  # tensor names listed in an error message before "... (N in all)"


def read_tensor_file(path: str | os.PathLike) -> tuple[Any, dict[str, str]]:
    """The object stored in ``path`` and its safetensors metadata ({} for PyTorch files); a missing, empty,
    truncated or foreign file, or one holding Python objects, raises a one-line ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); get the file again")
    with path.open("rb") as file:
        head = file.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        try:
            with safetensors.safe_open(path, framework="pt") as file:
                return {key: file.get_tensor(key) for key in file.keys()}, file.metadata() or {}
        except (safetensors.SafetensorError, OSError, ValueError) as error:
            raise ValueError(
                f"{path} is a truncated or corrupt safetensors file ({error}); get the file again"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as error:
        # torch names the refused object: "... unsupported GLOBAL posix.system whose module posix is blocked"
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise ValueError(
            f"refusing to load {path}: it holds Python objects other than tensors "
            f"({refused[1] if refused else 'unnamed'}), and unpickling them could run code. Re-save only the state "
            f"dict (torch.save(model.state_dict(), ...)) from a source you trust"
        ) from None
    except Exception as error:  # torch.load fails in many ways on foreign bytes (KeyError, RuntimeError, ...)
        raise ValueError(
            f"cannot read {path}: it is truncated or not a PyTorch or safetensors file ({first_line(error)}); "
            f"get the file again"
        ) from None


def unwrap_state_dict(checkpoint: Any, path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict inside a loaded checkpoint, without the ``module.`` prefix that ``nn.DataParallel`` adds,
    and the names of the checkpoint's other top-level entries (an optimizer state, an epoch count, ...)."""
    skipped: list[str] = []
    if isinstance(checkpoint, Mapping):
        for entry in STATE_DICT_ENTRIES:
            if isinstance(checkpoint.get(entry), Mapping):
                skipped = sorted(str(key) for key in checkpoint if key != entry)
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(f"{path} holds no state dict (found {type(checkpoint).__name__})")
    not_tensors = [str(key) for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: these state dict entries are not tensors: {', '.join(not_tensors[:5])}")
    state = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    return state, skipped


def listing(names: Sequence[str], limit: int = SHOWN_NAMES) -> str:
    """``a, b, c`` -- or ``a, b, ... (12 in all)`` when there are more than ``limit``."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


@dataclass(frozen=True)
class TensorMismatch:
    """How a file's tensors differ from a model's: shapes that differ, tensors only the model has (missing from
    the file) and tensors only the file has."""

    wrong_shape: list[str]
    missing: list[str]
    unexpected: list[str]

    def __len__(self) -> int:
        return len(self.wrong_shape) + len(self.missing) + len(self.unexpected)

    def __str__(self) -> str:
        parts = [listing(self.wrong_shape, limit=4)] if self.wrong_shape else []
        if self.missing:
            parts.append(f"missing from the file: {listing(self.missing, limit=3)}")
        if self.unexpected:
            parts.append(f"not in the model: {listing(self.unexpected, limit=3)}")
        return "; ".join(parts)


def compare_tensors(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]]) -> TensorMismatch:
    """Compare shapes: ``expected`` are the model's, ``found`` the file's. Empty (``len() == 0``) when they fit."""
    return TensorMismatch(
        wrong_shape=[f"{key}: file {tuple(found[key])}, model {tuple(shape)}"
                     for key, shape in expected.items() if key in found and tuple(found[key]) != tuple(shape)],
        missing=[key for key in expected if key not in found],
        unexpected=[key for key in found if key not in expected],
    )


def shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


