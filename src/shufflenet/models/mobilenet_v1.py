"""MobileNet V1 (Howard et al., 2017): a 3x3 conv then 13 depthwise-separable pairs, BN + ReLU after every conv."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..ops import ConvBNAct
from .base import ImageClassifier

STEM_WIDTH = 32  # Table 1, first row: Conv 3x3 s2, 32 filters
# Table 1: (pointwise output width, depthwise stride) of each depthwise-separable pair. The paper prints the
# 13th depthwise conv as "s2"; it must be s1 (its input is already 7x7), as in TF-slim's _CONV_DEFS.
SEPARABLE_LAYERS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)


# "relu": the paper (Sec. 3.1). "relu6": TF-slim's released checkpoints and timm's mobilenetv1_* models.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def scaled_width(width: int, alpha: float) -> int:
    """Width multiplier alpha (Sec. 3.3) as TF-slim's released models apply it: ``max(int(width * alpha), 8)``."""
    return max(int(width * alpha), 8)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv -> BN -> ReLU (Fig. 3, right); ``act`` replaces ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act: Callable[[], nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, act=act)
        self.pw = ConvBNAct(in_channels, out_channels, 1, act=act)


class MobileNetV1(ImageClassifier):
    """MobileNet V1 of Table 1 with width multiplier ``alpha`` (any positive value); the resolution multiplier
    is the input size (224, 192, 160, 128 in the paper). ``activation`` is "relu" (the paper) or "relu6"
    (TF-slim and timm, whose weights need it)."""

    def __init__(
        self,
        alpha: float = 1.0,
        activation: str = "relu",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        features_only: bool = False,
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"width multiplier alpha must be positive, got {alpha}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        in_width = scaled_width(STEM_WIDTH, alpha)
        blocks: list[nn.Module] = [ConvBNAct(in_chans, in_width, 3, stride=2, act=act)]
        block_channels, block_strides = [in_width], [2]
        for width, stride in SEPARABLE_LAYERS:
            out_width = scaled_width(width, alpha)
            blocks.append(DepthwiseSeparable(in_width, out_width, stride, act))
            block_channels.append(out_width)
            block_strides.append(stride)
            in_width = out_width
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
        self.alpha = alpha
        self.activation = activation
