"""torchvision models that the speed benchmark measures beside ours, randomly initialised (no download).

AlexNet is the papers' speed reference (720 MFLOPs in ShuffleNet Tables 6 and 8 and MobileNets Table 9);
torchvision's ShuffleNet V2 1.0x is there for context.
"""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

REFERENCE_MODELS: dict[str, Callable[..., nn.Module]] = {
    "tv_alexnet": torchvision.models.alexnet,
    "tv_shufflenet_v2_x1_0": torchvision.models.shufflenet_v2_x1_0,
}


def create_reference_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised torchvision model by its ``tv_`` name."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference model {name!r}; choose one of {', '.join(REFERENCE_MODELS)}")
    return REFERENCE_MODELS[name](weights=None, num_classes=num_classes)
