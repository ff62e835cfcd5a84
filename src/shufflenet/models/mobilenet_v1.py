"""MobileNet V1 (Howard et al., 2017): a 3x3 conv then 13 depthwise-separable pairs, BN + ReLU after every conv."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .builder import ImageClassifier, Row
from .layers import ConvBNAct
from .registry import register_model, scale_tag

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


def mobilenet_v1_rows(alpha: float = 1.0, activation: str = "relu") -> list[Row]:
    """MobileNet V1's rows (Table 1); the arguments are :class:`MobileNetV1`'s."""
    if not alpha > 0:
        raise ValueError(f"width multiplier alpha must be positive, got {alpha}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    return [Row(ConvBNAct, scaled_width(STEM_WIDTH, alpha), stride=2, options={"kernel_size": 3, "act": act}),
            *(Row(DepthwiseSeparable, scaled_width(width, alpha), stride=stride, options={"act": act})
              for width, stride in SEPARABLE_LAYERS)]


class MobileNetV1(ImageClassifier):
    """MobileNet V1 of Table 1 with width multiplier ``alpha`` (any positive value); the resolution multiplier
    is the input size (224, 192, 160, 128 in the paper). ``activation`` is "relu" (the paper) or "relu6"
    (TF-slim and timm, whose weights need it). ``small_input`` (32x32 images, as ShuffleNet's): the stem conv and
    the first stride-2 depthwise conv get stride 1, so the network downsamples 8x instead of 32x."""

    architecture = staticmethod(mobilenet_v1_rows)  # the rows, without building: registry.model_rows


for _alpha in (1.0, 0.75, 0.5, 0.25):  # Table 6
    register_model(f"mobilenet_v1_{scale_tag(_alpha)}", MobileNetV1, alpha=_alpha)
