"""A detector's training configuration: the run and optimisation sections that every task shares, and the
detection section (backbone, data folder, detector settings). Nothing of classification's (data set names,
MD5 checks, label smoothing, test-time augmentation) is here."""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..data.sources import DataSpec
from ..engine.config import Config, OptimSection, RunSection, option


@dataclass(kw_only=True)
class DetectionSection:
    """What a detector is trained on and what it is."""

    TITLE: ClassVar[str] = "detector and data"

    model: str = option(MISSING, "the backbone: a registered model name (see `shufflenet models`)")
    data_dir: str = option(MISSING, "the data folder: a VOC folder (JPEGImages/, Annotations/, ImageSets/Main/) or "
                                    "images/ + annotations/ + split lists (train*.csv|txt, test*.csv|txt)")
    annotations: str | None = option(None, "the annotations, when not in the data folder: a folder of VOC XML files "
                                           "or a COCO JSON file")
    train_split: str | None = option(None, "training images, when not found in the data folder: a CSV with a "
                                           "filename column, or one name per line")
    test_split: str | None = option(None, "evaluation images, as --train-split")
    classes: str | None = option(None, "class names, comma-separated (default: those the training annotations name)")
    backbone_weights: str | None = option(None, "a classification weight file of ours for the backbone (its "
                                                "classifier is left out)")
    fpn: bool = option(True, "a feature pyramid on strides 8/16/32 (--no-fpn: the paper's single feature map)")
    feature_stride: int = option(16, "with --no-fpn: the map that feeds the detector, stride 16 (Stage 3) or 32",
                                 low=16, high=32)
    min_size: int = option(600, "shorter image side after resizing (the paper's 300x / 600x)", low=32)
    max_size: int = option(1000, "cap on the longer side after resizing", low=32)
    frozen_stages: int = option(1, "backbone feature levels kept frozen (-1: none; 0: the stem)", low=-1, high=3)
    norm_eval: bool = option(True, "keep the backbone's BatchNorm statistics frozen")
    flip: bool = option(True, "random horizontal flips while training")


@dataclass(kw_only=True)
class DetectConfig(DetectionSection, OptimSection, RunSection, Config):
    """A detector's training run."""

    # Ours, for a CPU: torchvision's detection reference lr 0.02 at batch 16, momentum 0.9, weight decay 1e-4;
    # cosine after a 1-epoch warm-up.
    RECIPES: ClassVar[dict[str, dict[str, Any]]] = {
        "detection": dict(epochs=24, batch_size=4, lr=0.02, lr_reference_batch=16, nesterov=False,
                          weight_decay=1e-4, schedule="cosine", warmup_epochs=1.0),
    }

    def default_name(self) -> str:
        return f"{self.model}-detect-{Path(self.data_dir).name}"

    def default_recipe(self, spec: DataSpec) -> str:
        return "detection"
