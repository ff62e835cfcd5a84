"""A model ready for inference by name: a registered model (optionally with a weight file), or one of the
torchvision models that the speed benchmark measures beside ours (randomly initialised, no download)."""
from __future__ import annotations

import os
from typing import Any, Callable

import torchvision
from torch import nn

from .preprocessing import IMAGENET, Preprocessing
from .registry import create_model

# AlexNet is the papers' speed reference (720 MFLOPs in ShuffleNet Tables 6 and 8 and MobileNets Table 9);
# torchvision's ShuffleNet V2 1.0x is there for context.
REFERENCE_MODELS: dict[str, Callable[..., nn.Module]] = {
    "tv_alexnet": torchvision.models.alexnet,
    "tv_shufflenet_v2_x1_0": torchvision.models.shufflenet_v2_x1_0,
}


def load_model(name: str, weights: str | os.PathLike | None = None, num_classes: int | None = None,
               **kwargs: Any) -> tuple[nn.Module, Preprocessing]:
    """``(model, preprocessing)`` in eval mode. ``name`` is registered (randomly initialised without
    ``weights``; with them, loaded as ``create_model(name, weights=...)`` does, with the recorded preprocessing) or
    a ``tv_`` reference model. Without a record the preprocessing is torchvision's ImageNet one."""
    if name in REFERENCE_MODELS:
        if weights is not None:
            raise ValueError(f"{name} is a torchvision reference model for benchmarks; it takes no --weights")
        return REFERENCE_MODELS[name](weights=None, num_classes=num_classes or 1000).eval(), IMAGENET
    model = create_model(name, num_classes=num_classes, weights=weights, **kwargs).eval()
    return model, getattr(model, "preprocessing", IMAGENET)
