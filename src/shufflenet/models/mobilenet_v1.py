"""MobileNet V1 (Howard et al., 2017): a 3x3 conv then 13 depthwise-separable pairs, BN + ReLU after every conv."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .builder import ImageClassifier, Layer
from .layers import ConvBNAct

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
    (TF-slim and timm, whose weights need it). ``small_input`` (32x32 images, as ShuffleNet's): the stem conv and
    the first stride-2 depthwise conv get stride 1, so the network downsamples 8x instead of 32x."""

    def __init__(
        self,
        alpha: float = 1.0,
        activation: str = "relu",
        small_input: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **backbone: Any,
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"width multiplier alpha must be positive, got {alpha}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        stem = scaled_width(STEM_WIDTH, alpha)
        stem_stride = 1 if small_input else 2
        layers = [Layer("0", lambda c: ConvBNAct(c, stem, 3, stride=stem_stride, act=act), stem, stem_stride)]
        first_stride2 = next(i for i, (_, stride) in enumerate(SEPARABLE_LAYERS) if stride == 2)
        for index, (width, stride) in enumerate(SEPARABLE_LAYERS):
            stride = 1 if small_input and index == first_stride2 else stride
            out_width = scaled_width(width, alpha)
            layers.append(Layer(str(index + 1), lambda c, w=out_width, s=stride: DepthwiseSeparable(c, w, s, act),
                                out_width, stride))
        super().__init__(layers, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                         classifier_bias=True, **backbone)
        self.alpha = alpha
        self.activation = activation
        self.small_input = small_input
