"""MobileNet V2 (Sandler et al., CVPR 2018): inverted residuals with linear bottlenecks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .builder import ImageClassifier, Row
from .layers import ConvBNAct, make_divisible
from .registry import register_model, scale_tag

STEM_WIDTH = 32  # Table 2, first row
LAST_WIDTH = 1280  # Table 2, the 1x1 conv before the pool; kept at 1280 for multipliers <= 1 (Sec. 6.1)
# Table 2: (expansion t, output channels c, repeats n, stride s of the first block of the sequence).
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Table 1: 1x1 expansion (t x, ReLU6; omitted when t = 1) -> 3x3 depthwise (stride, ReLU6) -> linear 1x1
    projection; the input is added only when stride is 1 and the widths match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            ConvBNAct(hidden, out_channels, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def mobilenet_v2_rows(width_mult: float = 1.0) -> list[Row]:
    """MobileNet V2's rows (Table 2); the argument is :class:`MobileNetV2`'s."""
    if not width_mult > 0:
        raise ValueError(f"width multiplier must be positive, got {width_mult}")
    last = make_divisible(LAST_WIDTH * max(1.0, width_mult), 8)
    return [Row(ConvBNAct, make_divisible(STEM_WIDTH * width_mult, 8), stride=2,
                options={"kernel_size": 3, "act": nn.ReLU6}),
            *(Row(InvertedResidual, make_divisible(width * width_mult, 8), repeats, stride, {"expansion": expansion})
              for expansion, width, repeats, stride in INVERTED_RESIDUAL_SETTINGS),
            Row(ConvBNAct, last, options={"kernel_size": 1, "act": nn.ReLU6})]


class MobileNetV2(ImageClassifier):
    """MobileNet V2 of Table 2. Every width is ``width_mult`` times the table's, rounded to a multiple of 8
    (``make_divisible``); the last 1x1 conv keeps 1280 channels for ``width_mult <= 1``. ``small_input`` (32x32
    images, as ShuffleNet's): the stem conv and the first stride-2 block get stride 1, so the network
    downsamples 8x instead of 32x."""

    architecture = staticmethod(mobilenet_v2_rows)  # the rows, without building: registry.model_rows

    def __init__(self, drop_rate: float = 0.2, **kwargs: Any) -> None:  # torchvision's default dropout
        super().__init__(drop_rate=drop_rate, **kwargs)


for _width in (1.4, 1.3, 1.0, 0.75, 0.5, 0.35):  # the released MobileNet V2 checkpoints
    register_model(f"mobilenet_v2_{scale_tag(_width)}", MobileNetV2, width_mult=_width)
