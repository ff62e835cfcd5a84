"""MobileNet V2 (Sandler et al., CVPR 2018): inverted residuals with linear bottlenecks."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import ConvBNAct, make_divisible
from .base import ImageClassifier

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
    (``make_divisible``); the last 1x1 conv keeps 1280 channels for ``width_mult <= 1``."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        features_only: bool = False,
    ) -> None:
        if not width_mult > 0:
            raise ValueError(f"width multiplier must be positive, got {width_mult}")
        in_width = make_divisible(STEM_WIDTH * width_mult, 8)
        blocks: list[nn.Module] = [ConvBNAct(in_chans, in_width, 3, stride=2, act=nn.ReLU6)]
        block_channels, block_strides = [in_width], [2]
        for expansion, width, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
            out_width = make_divisible(width * width_mult, 8)
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(in_width, out_width, stride, expansion))
                block_channels.append(out_width)
                block_strides.append(stride)
                in_width = out_width
        last_width = make_divisible(LAST_WIDTH * max(1.0, width_mult), 8)
        blocks.append(ConvBNAct(in_width, last_width, 1, act=nn.ReLU6))
        block_channels.append(last_width)
        block_strides.append(1)
        super().__init__(
            nn.Sequential(*blocks),
            block_channels,
            block_strides,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            classifier_bias=True,
            features_only=features_only,
        )
        self.width_mult = width_mult
