"""Weight files: safetensors carrying the architecture, its arguments, the class count and the preprocessing.

``save_weights`` writes them (atomically), ``create_model(name, weights=path)`` and ``load_weights(path)`` read
them back. Checkpoints in PyTorch's pickle format (``.pth``, ``.pth.tar``, ``.bin``) are read only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so opening one
never runs code from the file.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import safetensors
import safetensors.torch
import torch
from torch import nn

from .files import write_atomically
from .preprocessing import IMAGENET, Preprocessing

METADATA_KEYS = ("architecture", "kwargs", "num_classes", "preprocessing")
PREFIX = "shufflenet."  # our keys in the safetensors header's __metadata__
FORMAT_VERSION = "1"
# Entries under which training scripts store the model's state dict (megvii train.py: 'state_dict';
# torchvision's and timm's training scripts: 'model' / 'state_dict').
STATE_DICT_ENTRIES = ("state_dict", "model")
SHOWN_NAMES = 8  # tensor names listed in an error message before "... (N in all)"


@dataclass(frozen=True)
class WeightsFile:
    """A weight file's tensors and, for files we wrote, what they were made for (None / {} when not recorded)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    architecture: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None


@dataclass(frozen=True)
class LoadReport:
    loaded: list[str]
    skipped: list[str]  # tensors of the file left out (a classifier of another size)


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    preprocessing: Preprocessing = IMAGENET,
    source: str = "",
    class_names: Sequence[str] | None = None,
) -> None:
    """Save ``model``'s state dict as a safetensors file whose metadata names the registered architecture, its
    constructor arguments, ``num_classes`` and the ``preprocessing`` the weights expect (``source``: free-text
    provenance; ``class_names``: the label of each output, optional). The model must come from
    ``create_model``, which records its name and arguments."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError(
            f"{type(model).__name__} has no registered name to record; build it with shufflenet.create_model(...)"
        )
    try:
        kwargs = json.dumps(arch["kwargs"], sort_keys=True)
    except TypeError as error:
        raise ValueError(f"the model's arguments {arch['kwargs']} cannot be stored as JSON ({error})") from None
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    if any(tensor.is_meta for tensor in tensors.values()):
        raise ValueError("the model is on the meta device and has no values to save; build it on a real device")
    metadata = {
        "format": "pt",
        PREFIX + "architecture": arch["name"],
        PREFIX + "kwargs": kwargs,
        PREFIX + "num_classes": str(model.num_classes),
        PREFIX + "preprocessing": json.dumps(preprocessing.to_dict()),
        PREFIX + "format_version": FORMAT_VERSION,
    }
    if source:
        metadata[PREFIX + "source"] = source
    if class_names:
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
        metadata[PREFIX + "class_names"] = json.dumps(list(class_names))
    write_atomically(path, safetensors.torch.save(tensors, metadata))


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict[str, str]]:
    """The object stored in ``path`` and its safetensors metadata ({} for PyTorch files).

    A safetensors file is recognised by its header, not its name. Anything else goes through
    ``torch.load(weights_only=True)``; a file that needs more than tensors and plain containers is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
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
        # torch names the refused object on a line such as "WeightsUnpickler error: Unsupported global: GLOBAL x.y
        # was not an allowed global by default. ..."
        lines = [line for line in str(error).splitlines() if "WeightsUnpickler error:" in line]
        refused = lines[0].split("WeightsUnpickler error:")[1].split(" was not")[0].strip() if lines else "unknown"
        raise ValueError(
            f"refusing to load {path}: it holds Python objects other than tensors ({refused}), and unpickling them "
            f"could run code. Re-save only the state dict (torch.save(model.state_dict(), ...)) from a source "
            f"you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"cannot read {path}: it is truncated or not a PyTorch checkpoint ({str(error).strip()}); "
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


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a file written by ``save_weights``, or a plain state dict in our layout (``.pth`` or ``.safetensors``
    without our metadata, for which only ``num_classes`` is inferred, from ``classifier.weight``)."""
    checkpoint, metadata = read_checkpoint(path)
    tensors, _ = unwrap_state_dict(checkpoint, path)
    classifier = tensors.get("classifier.weight")
    inferred_classes = None if classifier is None else classifier.shape[0]
    if PREFIX + "architecture" not in metadata:
        return WeightsFile(Path(path), tensors, num_classes=inferred_classes)
    missing = [key for key in METADATA_KEYS if PREFIX + key not in metadata]
    if missing:
        raise ValueError(f"{path}: the metadata lacks {', '.join(missing)}; save the model again with save_weights")
    try:
        return WeightsFile(
            Path(path),
            tensors,
            architecture=metadata[PREFIX + "architecture"],
            model_kwargs=json.loads(metadata[PREFIX + "kwargs"]),
            num_classes=int(metadata[PREFIX + "num_classes"]),
            preprocessing=Preprocessing.from_dict(json.loads(metadata[PREFIX + "preprocessing"])),
            class_names=json.loads(metadata[PREFIX + "class_names"]) if PREFIX + "class_names" in metadata else None,
        )
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: unreadable metadata ({error}); save the model again with save_weights") from None


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


def load_weights_into(
    model: nn.Module, weights: WeightsFile | str | os.PathLike, allow_classifier_reset: bool = False
) -> LoadReport:
    """Copy the file's tensors into ``model``; every tensor must fit, except that a classifier of another size is
    left out (the model keeps its freshly initialised one) when ``allow_classifier_reset`` is true or the model
    has no classifier (``num_classes=0``, ``features_only=True``). Left-out tensors are named in a warning and in
    the returned report. The file's preprocessing becomes ``model.preprocessing``."""
    if not isinstance(weights, WeightsFile):
        weights = read_weights(weights)
    arch = getattr(model, "arch", None)
    model_name = arch["name"] if arch else type(model).__name__
    built_as = f"{model_name} with {arch['kwargs']}" if arch and arch["kwargs"] else model_name
    expected = shapes(model.state_dict())
    found = shapes(weights.tensors)

    def split(table: dict[str, tuple[int, ...]]) -> tuple[dict, dict]:
        head = {k: v for k, v in table.items() if k.startswith("classifier.")}
        return {k: v for k, v in table.items() if k not in head}, head

    (body_expected, head_expected), (body_found, head_found) = split(expected), split(found)
    body_problems = compare_tensors(body_expected, body_found)
    if weights.architecture and arch and weights.architecture != arch["name"]:
        details = str(compare_tensors(expected, found)) or "none, the shapes happen to agree"
        raise ValueError(
            f"{weights.path} holds weights for {weights.architecture!r}, not {model_name!r}; mismatching "
            f"tensors: {details}. Build the model with create_model({weights.architecture!r}, weights=...)"
        )
    if body_problems:
        made_for = weights.architecture or "an unrecorded architecture"
        raise ValueError(
            f"{weights.path} (made for {made_for}) does not fit {built_as}: {body_problems}. "
            f"If it is an official checkpoint, convert it first: shufflenet convert SRC DST --from SOURCE"
        )
    skipped: list[str] = []
    head_problems = compare_tensors(head_expected, head_found)
    if head_problems:
        if head_expected and not allow_classifier_reset:
            raise ValueError(
                f"{weights.path} has a {weights.num_classes}-class classifier, the model has {model.num_classes} "
                f"classes ({head_problems}); pass allow_classifier_reset=True to load the backbone "
                f"and keep a freshly initialised {model.num_classes}-class classifier"
            )
        skipped = sorted(head_found)
    tensors = {key: value for key, value in weights.tensors.items() if key not in skipped}
    model.load_state_dict(tensors, strict=not skipped)
    if weights.preprocessing is not None:
        model.preprocessing = weights.preprocessing
    if weights.class_names is not None and not skipped:
        model.class_names = weights.class_names
    if skipped and head_expected:
        warnings.warn(
            f"loaded {len(tensors)} tensors from {weights.path}; left out {', '.join(skipped)} "
            f"({weights.num_classes} classes): the {model.num_classes}-class classifier is freshly initialised",
            stacklevel=2,
        )
    return LoadReport(loaded=sorted(tensors), skipped=skipped)


def load_weights(
    path: str | os.PathLike, num_classes: int | None = None, allow_classifier_reset: bool = False, **kwargs: Any
) -> nn.Module:
    """Rebuild the model a ``save_weights`` file was made for, from the file alone, and load it. ``num_classes``
    and ``kwargs`` override what the file records (see ``load_weights_into`` for a different class count)."""
    from .registry import create_model  # registry imports this module

    weights = read_weights(path)
    if weights.architecture is None:
        raise ValueError(
            f"{path} records no architecture (it is a plain state dict); use create_model(NAME, weights={str(path)!r})"
            f" or convert an official checkpoint with `shufflenet convert`"
        )
    return create_model(
        weights.architecture, num_classes=num_classes, weights=weights,
        allow_classifier_reset=allow_classifier_reset, **kwargs,
    )
