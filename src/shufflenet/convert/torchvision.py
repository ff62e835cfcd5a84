"""torchvision's MobileNet V2 checkpoints (``MobileNet_V2_Weights``) renamed to our keys."""
from __future__ import annotations

import re

import torch

from ..data.preprocessing import IMAGENET
from .common import Renamed, rename_each

SIGNATURE_KEY = "features.0.0.weight"
# MobileNet_V2_Weights.IMAGENET1K_V1: resize 256, crop 224, bilinear, ImageNet mean/std (V2: resize 232).
PREPROCESSING = IMAGENET

CONV_BN = re.compile(r"features\.(\d+)\.([01])\.(\w+)$")  # stem and last 1x1: [conv, BN, ReLU6]
NESTED = re.compile(r"features\.(\d+)\.conv\.(\d+)\.([01])\.(\w+)$")  # expand / depthwise [conv, BN, ReLU6]
FLAT = re.compile(r"features\.(\d+)\.conv\.(\d+)\.(\w+)$")  # the projection conv, then its BN


def rename_keys(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """torchvision MobileNetV2: features.N.conv = [ConvBNReLU6 (expand, absent for t = 1), ConvBNReLU6 (dw),
    Conv2d (project), BatchNorm2d]; features.0 / features.18 = [conv, BN, ReLU6]; classifier = [Dropout, Linear]."""
    projections = {
        (m[1], int(m[2])) for key, tensor in state.items() if (m := FLAT.match(key)) and tensor.dim() == 4
    }

    def rename(key: str) -> str | None:
        if key.startswith("classifier.1."):
            return "classifier." + key[len("classifier.1."):]
        if match := CONV_BN.match(key):
            return f"features.{match[1]}.{('conv', 'bn')[int(match[2])]}.{match[3]}"
        if match := NESTED.match(key):
            return f"features.{match[1]}.conv.{match[2]}.{('conv', 'bn')[int(match[3])]}.{match[4]}"
        if match := FLAT.match(key):
            block, index = match[1], int(match[2])
            if (block, index) in projections:
                return f"features.{block}.conv.{index}.conv.{match[3]}"
            if (block, index - 1) in projections:
                return f"features.{block}.conv.{index - 1}.bn.{match[3]}"
        return None

    return rename_each(state, rename)


def rename(state: dict[str, torch.Tensor]) -> Renamed:
    renamed, unknown = rename_keys(state)
    return Renamed(renamed, unknown, "mobilenet_v2_*", PREPROCESSING,
                   "Only torchvision's mobilenet_v2 layout is supported, at the registered widths.")
