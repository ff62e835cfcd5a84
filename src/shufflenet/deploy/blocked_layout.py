"""Export-time rewrite of ShuffleNet units for ONNX Runtime's blocked-channel CPU kernels; outputs are unchanged.

ONNX Runtime's CPU layout optimiser (level ORT_ENABLE_ALL) runs a convolution in its fast blocked "NCHWc" form
only when every group's input and output channels are a multiple of the vector block (8 floats with AVX2, 16
with AVX-512); otherwise the convolution falls back to slower NCHW kernels with layout conversions around it.
ShuffleNet 1x g=3 has 20 bottleneck channels per group in stage 2, 0.5x has 10 and 20 in stages 2 and 3. And
the channel shuffle exports as Reshape-Transpose-Reshape, three copies where one Gather does (what the
rewrite saves: docs/deploy.md and table8.md, backend ort against ort-plain).

Per unit of a BN-folded model: each group of the bottleneck gets zero channels appended up to a multiple of
the block (zero weights and bias, so they stay 0 through ReLU and the depthwise conv, and the second
pointwise conv gives them zero weights); the shuffle moves after the depthwise conv, which acts per channel
and so commutes with any channel permutation (ShuffleNet Fig. 2: nothing but BN separates them), where it is
on 4x fewer pixels in stride-2 units; and it becomes one ``index_select`` (ONNX Gather) whose index table maps
the padded layout to the padded input groups of the second pointwise conv. The stride-2 shortcut's 3x3
average pool, which counts the zero padding (every window divides by 9), becomes the identical depthwise conv
with weights 1/9, which ONNX Runtime runs faster once quantized to int8.
"""
from __future__ import annotations

import torch
from torch import nn

from ..machine import vector_floats
from ..models.layers import ChannelShuffle
from ..models.shufflenet_v1 import ShuffleUnit
from .folding import fold_batchnorm


def padded_conv(conv: nn.Conv2d, in_channels: int, out_channels: int, rows: torch.Tensor | None) -> nn.Conv2d:
    """A conv of ``conv``'s geometry widened to ``in_channels`` -> ``out_channels`` and zero everywhere except:
    output channels ``rows`` (all when ``None``) hold ``conv``'s weights in their first per-group input
    channels, and its bias. A depthwise ``conv`` stays depthwise."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    padded = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                       out_channels if depthwise else conv.groups, bias=True)
    rows = torch.arange(out_channels) if rows is None else rows
    with torch.no_grad():
        padded.weight.zero_()
        padded.bias.zero_()
        padded.weight[rows, : conv.weight.shape[1]] = conv.weight
        if conv.bias is not None:
            padded.bias[rows] = conv.bias
    return padded


def average_pool_as_conv(pool: nn.Module, channels: int) -> nn.Module:
    """A depthwise conv computing the same as ``pool`` when it is an ``AvgPool2d`` that counts padding (so every
    window divides by k * k, the unit's shortcut: ``nn.AvgPool2d(3, 2, 1)``); anything else is returned as is.
    ONNX Runtime's int8 average pool is several times slower than its int8 depthwise conv."""
    if not (isinstance(pool, nn.AvgPool2d) and pool.count_include_pad and not pool.ceil_mode
            and pool.divisor_override is None):
        return pool
    kernel = nn.modules.utils._pair(pool.kernel_size)
    conv = nn.Conv2d(channels, channels, kernel, pool.stride, pool.padding, groups=channels, bias=False)
    nn.init.constant_(conv.weight, 1.0 / (kernel[0] * kernel[1]))
    return conv


class ChannelGather(nn.Module):
    """Input channel ``order[p]`` at position ``p``: one ``index_select`` (ONNX Gather). ``shuffle_groups``: the
    group count of the channel shuffle it computes when it is exactly one (no padding), else None."""

    def __init__(self, order: torch.Tensor, shuffle_groups: int | None) -> None:
        super().__init__()
        self.register_buffer("order", order)
        self.shuffle_groups = shuffle_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, 1, self.order)


class BlockedShuffleUnit(nn.Module):
    """A BN-folded :class:`ShuffleUnit` with a block-padded bottleneck and its shuffle as one Gather after the
    depthwise conv. Computes the same function as the unit it is built from."""

    def __init__(self, unit: ShuffleUnit, block: int) -> None:
        super().__init__()
        pw1, dw, pw2 = unit.pw1.conv, unit.dw.conv, unit.pw2.conv
        if any(not isinstance(part.bn, nn.Identity) for part in (unit.pw1, unit.dw, unit.pw2)):
            raise ValueError("BlockedShuffleUnit needs a BN-folded unit; apply fold_batchnorm first")
        mid, groups = pw1.out_channels, pw2.groups
        per_group = mid // groups
        padded_per_group = -(-per_group // block) * block
        padded_mid = groups * padded_per_group
        # Channel c of the bottleneck (group c // per_group) sits at position[c] in the padded layout; the same
        # map places the shuffled channels into the padded input groups of the second pointwise conv.
        position = torch.tensor([c // per_group * padded_per_group + c % per_group for c in range(mid)])
        shuffle_groups = unit.shuffle.groups if isinstance(unit.shuffle, ChannelShuffle) else 1
        # The paper's shuffle: position p takes channel (p % g) * (C / g) + p // g (ops.channel_shuffle).
        source = torch.tensor([p % shuffle_groups * (mid // shuffle_groups) + p // shuffle_groups for p in range(mid)])
        self.gather: nn.Module
        if padded_per_group == per_group and shuffle_groups == 1:
            self.gather = nn.Identity()
        else:
            zero_channel = per_group if padded_per_group > per_group else 0  # a padding channel: always 0
            order = torch.full((padded_mid,), zero_channel, dtype=torch.long)
            order[position] = position[source]
            self.gather = ChannelGather(order, shuffle_groups if padded_per_group == per_group else None)
        self.pw1 = padded_conv(pw1, pw1.in_channels, padded_mid, position)
        # The depthwise conv now runs before the shuffle: its filter p belongs to channel source[p].
        self.dw = padded_conv(dw, padded_mid, padded_mid, position[source])
        self.pw2 = padded_conv(pw2, padded_mid, pw2.out_channels, None)
        self.se = unit.se
        self.shortcut = average_pool_as_conv(unit.shortcut, pw1.in_channels)
        self.stride = unit.stride

    @property
    def order(self) -> torch.Tensor | None:
        """Where each input channel of the second pointwise conv comes from (None: in order)."""
        return self.gather.order if isinstance(self.gather, ChannelGather) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gather(self.dw(torch.relu(self.pw1(x))))
        out = self.se(self.pw2(out))
        if self.stride == 1:
            return torch.relu(out + x)
        return torch.relu(torch.cat((self.shortcut(x), out), 1))


def rewrite_for_blocked_layout(model: nn.Module, block: int | None = None) -> nn.Module:
    """An eval-mode, BN-folded copy of ``model`` with every ShuffleNet unit replaced by a
    :class:`BlockedShuffleUnit` (``block`` defaults to this CPU's vector width in floats). Other models
    come back BN-folded only. ``model`` is unchanged."""
    block = block or vector_floats()  # ONNX Runtime's NCHWc channel block on this CPU
    folded = fold_batchnorm(model)
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ShuffleUnit):
                setattr(parent, name, BlockedShuffleUnit(child, block))
    return folded
