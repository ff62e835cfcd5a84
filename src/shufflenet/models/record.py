"""One record per model: what it is (registered name, constructor arguments, class count, layout) and what its
weights expect (preprocessing, class names, data set), as torchvision's ``Weights.meta`` and timm's
``pretrained_cfg`` are for theirs.

The builder sets ``model.record`` (``ImageClassifier`` for its layout, ``build_model`` for the name and
arguments), loading a weight file updates it, ``save_weights`` writes it, and ``shufflenet.load`` and the
exports read it. A record is frozen: change it with ``model.record = model.record.replace(...)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..data.preprocessing import IMAGENET, Preprocessing


@dataclass(frozen=True)
class FeatureInfo:
    """A feature level: the output of ``features[index]`` (named ``name``), ``channels`` wide, at stride
    ``reduction``."""

    index: int
    name: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class ModelRecord:
    """``architecture``: the registered name (None for a model built without one, which cannot be saved);
    ``kwargs``: the constructor arguments given beyond those the name fixes; ``first_conv`` / ``classifier``:
    module names; ``feature_info``: every feature level of the trunk (strides 4-32)."""

    architecture: str | None
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_chans: int = 3
    first_conv: str = ""
    classifier: str = ""
    feature_info: tuple[FeatureInfo, ...] = ()
    preprocessing: Preprocessing = IMAGENET
    class_names: list[str] | None = None
    dataset: str | None = None  # what the weights were trained on, when known

    def __post_init__(self) -> None:
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a {self.num_classes}-class model")

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        return self.in_chans, self.preprocessing.crop, self.preprocessing.crop

    def replace(self, **changes: Any) -> ModelRecord:
        """A copy with ``changes`` (checked like a new record)."""
        return replace(self, **changes)


class Recorded:
    """Read-only views of ``self.record`` for a model class (mixed in before ``nn.Module``); TorchScript leaves
    them out (a record is Python data, not TorchScript's)."""

    record: ModelRecord
    __jit_unused_properties__ = ["num_classes", "in_chans", "preprocessing", "class_names", "dataset"]

    @property
    def num_classes(self) -> int:
        return self.record.num_classes

    @property
    def in_chans(self) -> int:
        return self.record.in_chans

    @property
    def preprocessing(self) -> Preprocessing:
        """What the weights expect of their input images (torchvision's ImageNet transform until weights load)."""
        return self.record.preprocessing

    @property
    def class_names(self) -> list[str] | None:
        return self.record.class_names

    @property
    def dataset(self) -> str | None:
        return self.record.dataset
