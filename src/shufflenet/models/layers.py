"""Layers shared by every family: channel shuffle (and its export modes), conv-BN-activation, squeeze-excitation,
width rounding."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle of ShuffleNet Fig. 1(c): view the channels as (groups, n), transpose to (n, groups), flatten.

    Output channel ``j`` takes input channel ``(j % groups) * n + j // groups`` with ``n = C / groups``.
    Differentiable, and keeps a channels_last input channels_last. Uses PyTorch's native
    ``torch.channel_shuffle``, which computes exactly this permutation (see benchmarks/channel_shuffle.py).
    """
    if x.dim() < 2:
        raise ValueError(f"channel_shuffle expects a tensor with a channel axis (N, C, ...), got shape "
                         f"{tuple(x.shape)}")
    channels = x.shape[1]
    if groups < 1 or channels % groups:
        raise ValueError(
            f"channel_shuffle: {channels} channels cannot be split into {groups} groups; "
            f"use a group count that divides the channel count"
        )
    if groups == 1:
        return x
    return torch.channel_shuffle(x, groups)


SHUFFLE_MODES = ("native", "reshape")


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`, the one channel shuffle of every model and export.

    ``mode``: "native" runs ``torch.channel_shuffle`` (fastest eager kernel; FX-traceable, with a quantized
    kernel); "reshape" runs the same permutation as view -> one transpose -> reshape, which exporters without an
    ``aten::channel_shuffle`` lowering take (the TorchScript-based ONNX exporter). :func:`set_shuffle_mode`
    switches every shuffle of a model. The unit that owns the shuffle fixes its width, so ``forward`` does not
    re-check the channel count.
    """

    def __init__(self, groups: int, mode: str = "native") -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"channel shuffle needs groups >= 1, got {groups}")
        self.groups = groups
        self.mode = check_shuffle_mode(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "native":
            return torch.channel_shuffle(x, self.groups)
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, mode={self.mode}"


def check_shuffle_mode(mode: str) -> str:
    if mode not in SHUFFLE_MODES:
        raise ValueError(f"channel shuffle mode must be one of {SHUFFLE_MODES}, got {mode!r}")
    return mode


def set_shuffle_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every :class:`ChannelShuffle` of ``model`` (in place) to ``mode``; returns ``model``."""
    check_shuffle_mode(mode)
    for module in model.modules():
        if isinstance(module, ChannelShuffle):
            module.mode = mode
    return model


class ConvBNAct(nn.Sequential):
    """Bias-free ``k x k`` convolution with 'same' padding, then BatchNorm, then an optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(
                    f"a convolution with {groups} groups needs {name} divisible by {groups}, got {value}; "
                    f"choose widths that are multiples of the group count"
                )
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (ties up), never below ``min_value`` (default
    ``divisor``) and never more than 10% below ``value``: the MobileNet V2 rounding rule (Sandler et al. Sec. 6.1,
    TF-slim ``_make_divisible``)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): global pool -> 1x1 conv (C -> C / ratio, at least 8) -> ReLU ->
    1x1 conv -> sigmoid gate on the input."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // ratio)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)
