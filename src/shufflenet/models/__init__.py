"""Model families, one file each with the names it registers, and the torchvision reference models."""
from __future__ import annotations

from . import reference
from .builder import ImageClassifier, Row
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .record import FeatureInfo, ModelRecord
from .registry import build_model, list_models, model_rows, model_spec, register_model
from .shufflenet_v1 import ShuffleNetV1, ShuffleUnit, shufflenet_v1_widths
from .structures import ComparisonNet

__all__ = [
    "ComparisonNet", "FeatureInfo", "ImageClassifier", "MobileNetV1", "MobileNetV2", "ModelRecord", "Row",
    "ShuffleNetV1", "ShuffleUnit",
    "build_model", "list_models", "model_rows", "model_spec", "reference", "register_model", "shufflenet_v1_widths",
]
