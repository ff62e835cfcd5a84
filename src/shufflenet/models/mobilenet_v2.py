"""MobileNet V2 (Sandler et al., CVPR 2018): inverted residuals with linear bottlenecks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .builder import ImageClassifier, Layer
from .layers import ConvBNAct, make_divisible

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


class MobileNetV2(ImageClassifier):
    """MobileNet V2 of Table 2. Every width is ``width_mult`` times the table's, rounded to a multiple of 8
    (``make_divisible``); the last 1x1 conv keeps 1280 channels for ``width_mult <= 1``. ``small_input`` (32x32
    images, as ShuffleNet's): the stem conv and the first stride-2 block get stride 1, so the network
    downsamples 8x instead of 32x."""

    def __init__(
        self,
        width_mult: float = 1.0,
        small_input: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        **backbone: Any,
    ) -> None:
        if not width_mult > 0:
            raise ValueError(f"width multiplier must be positive, got {width_mult}")
        stem = make_divisible(STEM_WIDTH * width_mult, 8)
        stem_stride = 1 if small_input else 2
        layers = [Layer("0", lambda c: ConvBNAct(c, stem, 3, stride=stem_stride, act=nn.ReLU6), stem, stem_stride)]
        first_stride2 = next(i for i, (*_, stride) in enumerate(INVERTED_RESIDUAL_SETTINGS) if stride == 2)
        for row, (expansion, width, repeats, first_stride) in enumerate(INVERTED_RESIDUAL_SETTINGS):
            out_width = make_divisible(width * width_mult, 8)
            for i in range(repeats):
                stride = first_stride if i == 0 and not (small_input and row == first_stride2) else 1
                layers.append(Layer(str(len(layers)), lambda c, w=out_width, s=stride, t=expansion:
                                    InvertedResidual(c, w, s, t), out_width, stride))
        last = make_divisible(LAST_WIDTH * max(1.0, width_mult), 8)
        layers.append(Layer(str(len(layers)), lambda c: ConvBNAct(c, last, 1, act=nn.ReLU6), last, 1))
        super().__init__(layers, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                         classifier_bias=True, **backbone)
        self.width_mult = width_mult
        self.small_input = small_input
