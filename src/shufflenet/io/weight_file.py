"""Our weight files: safetensors carrying a model's record (``models.record.ModelRecord``): the architecture, its
arguments, the class count, the class names, the data set and the preprocessing the weights expect.

``save_weights`` writes one (atomically); ``read_weights`` reads one back, or a plain state dict in our layout;
``load_into`` copies its tensors into a built model. Building the model a file describes is
``shufflenet.create_model(name, weights=...)`` / ``shufflenet.load(path)``, one layer up.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import safetensors.torch
import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from .atomic import write_atomically
from .tensor_file import compare_tensors, read_tensor_file, shapes, unwrap_state_dict

METADATA_KEYS = ("architecture", "kwargs", "num_classes", "preprocessing")
PREFIX = "shufflenet."  # our keys in the safetensors header's __metadata__
FORMAT_VERSION = "1"


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
    dataset: str | None = None  # the data set the weights were trained on, when recorded


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    preprocessing: Preprocessing | None = None,
    source: str = "",
    class_names: Sequence[str] | None = None,
    dataset: str | None = None,
) -> None:
    """Save ``model``'s state dict as a safetensors file carrying its record (``model.record``): the registered
    architecture, its constructor arguments, ``num_classes``, the preprocessing the weights expect, the class
    names and the data set. ``preprocessing``, ``class_names`` and ``dataset``, when given, update the model's
    record first; ``source`` is free-text provenance. The model must come from ``create_model``, which records
    its name and arguments."""
    changes = {key: value for key, value in (("preprocessing", preprocessing), ("dataset", dataset),
                                             ("class_names", None if class_names is None else list(class_names)))
               if value is not None}
    record = model.record.replace(**changes)
    if record.architecture is None:
        raise ValueError(
            f"{type(model).__name__} has no registered name to record; build it with shufflenet.create_model(...)"
        )
    try:
        kwargs = json.dumps(record.kwargs, sort_keys=True)
    except TypeError as error:
        raise ValueError(f"the model's arguments {record.kwargs} cannot be stored as JSON ({error})") from None
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    if any(tensor.is_meta for tensor in tensors.values()):
        raise ValueError("the model is on the meta device and has no values to save; build it on a real device")
    model.record = record
    metadata = {
        "format": "pt",
        PREFIX + "architecture": record.architecture,
        PREFIX + "kwargs": kwargs,
        PREFIX + "num_classes": str(record.num_classes),
        PREFIX + "preprocessing": record.preprocessing.to_json(),
        PREFIX + "format_version": FORMAT_VERSION,
    }
    if source:
        metadata[PREFIX + "source"] = source
    if record.class_names:
        metadata[PREFIX + "class_names"] = json.dumps(record.class_names)
    if record.dataset:
        metadata[PREFIX + "dataset"] = record.dataset
    write_atomically(path, safetensors.torch.save(tensors, metadata))


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a file written by ``save_weights``, or a plain state dict in our layout (``.pth`` or ``.safetensors``
    without our metadata, for which only ``num_classes`` is inferred, from ``classifier.weight``)."""
    checkpoint, metadata = read_tensor_file(path)
    tensors, _ = unwrap_state_dict(checkpoint, path)
    classifier = tensors.get("classifier.weight")
    inferred_classes = None if classifier is None else classifier.shape[0]
    if PREFIX + "architecture" not in metadata:
        return WeightsFile(Path(path), tensors, num_classes=inferred_classes)
    missing = [key for key in METADATA_KEYS if PREFIX + key not in metadata]
    if missing:
        raise ValueError(f"{path}: the metadata lacks {', '.join(missing)}; save the model again with save_weights")
    try:
        weights = WeightsFile(
            Path(path),
            tensors,
            architecture=metadata[PREFIX + "architecture"],
            model_kwargs=json.loads(metadata[PREFIX + "kwargs"]),
            num_classes=int(metadata[PREFIX + "num_classes"]),
            preprocessing=Preprocessing.from_dict(json.loads(metadata[PREFIX + "preprocessing"])),
            class_names=json.loads(metadata[PREFIX + "class_names"]) if PREFIX + "class_names" in metadata else None,
            dataset=metadata.get(PREFIX + "dataset"),
        )
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: unreadable metadata ({error}); save the model again with save_weights") from None
    if not isinstance(weights.model_kwargs, dict):
        raise ValueError(f"{path}: the recorded model arguments are not a mapping; save the model again")
    # The record must agree with the tensors before anyone builds a model from it (a forged class count could
    # otherwise demand any amount of memory).
    if inferred_classes is not None and weights.num_classes != inferred_classes:
        raise ValueError(f"{path} records {weights.num_classes} classes but its classifier has {inferred_classes} "
                         f"rows; the file is inconsistent, save the model again")
    if weights.class_names is not None and len(weights.class_names) != weights.num_classes:
        raise ValueError(f"{path} records {len(weights.class_names)} class names for {weights.num_classes} classes")
    return weights


def load_into(
    model: nn.Module, weights: WeightsFile | str | os.PathLike, allow_classifier_reset: bool = False,
    dry_run: bool = False,
) -> None:
    """Copy the file's tensors into ``model``; every tensor must fit, except that a classifier of another size is
    left out (the model keeps its freshly initialised one) when ``allow_classifier_reset`` is true or the model
    has no classifier (``num_classes=0``, ``features_only=True``); left-out tensors are named in a warning. The
    file's preprocessing, data set and (with its classifier) class names go into ``model.record``. ``dry_run``:
    only check the shapes (``model`` may be on the meta device)."""
    if not isinstance(weights, WeightsFile):
        weights = read_weights(weights)
    record = model.record
    model_name = record.architecture or type(model).__name__
    built_as = f"{model_name} with {record.kwargs}" if record.kwargs else model_name
    expected = shapes(model.state_dict())
    found = shapes(weights.tensors)

    def split(table: dict[str, tuple[int, ...]]) -> tuple[dict, dict]:
        head = {k: v for k, v in table.items() if k.startswith("classifier.")}
        return {k: v for k, v in table.items() if k not in head}, head

    (body_expected, head_expected), (body_found, head_found) = split(expected), split(found)
    body_problems = compare_tensors(body_expected, body_found)
    if weights.architecture and record.architecture and weights.architecture != record.architecture:
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
    if dry_run:
        return
    model.load_state_dict(tensors, strict=not skipped)
    model.record = record.replace(
        preprocessing=weights.preprocessing or record.preprocessing, dataset=weights.dataset or record.dataset,
        class_names=weights.class_names if weights.class_names is not None and not skipped else record.class_names)
    if skipped and head_expected:
        warnings.warn(
            f"loaded {len(tensors)} tensors from {weights.path}; left out {', '.join(skipped)} "
            f"({weights.num_classes} classes): the {model.num_classes}-class classifier is freshly initialised",
            stacklevel=2,
        )

