"""ShuffleNet V1 (Zhang et al., CVPR 2018): pointwise group convolutions with a channel shuffle.

Stem 3x3 conv s2 + 3x3 max-pool s2, stages 2-4 of ShuffleNet units, global pool, FC (paper Table 1).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from .builder import ImageClassifier, Layer, zero_init_residual_ends
from .layers import ChannelShuffle, ConvBNAct, SqueezeExcite, make_divisible

# Table 1: stage-2 output width of ShuffleNet 1x for each group count; stages 3 and 4 double it each time.
STAGE2_WIDTH_1X = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
# Table 1: units per stage (the first of each has stride 2).
STAGE_REPEATS = (4, 8, 4)
# Stem width per scale, before rounding up to a multiple of g. 0.5x-2x: official network.py (g=3 table:
# 12/24/24/48; with the round-up this also gives g=8's 16/24/24/48). 0.25x: our choice, same as 0.5x
# (keeps the paper's 13 MFLOPs; a 6-channel stem gives 11).
STEM_WIDTH = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
SHUFFLE_ORDERS = ("paper", "official")


def shufflenet_v1_widths(scale: float, groups: int) -> tuple[int, int, int, int]:
    """(stem, stage 2, stage 3, stage 4) output widths of ShuffleNet ``scale``x with ``groups`` groups.

    Rounding rule: the stage-2 width is ``scale`` times Table 1's, rounded to the nearest multiple of ``4 g``
    (ties up) so that the bottleneck (width / 4) splits into g groups; the stem is rounded up to a multiple of g
    so that the first unit's main branch (stage width - stem width) does too. For g = 3 and 8 this reproduces the
    official widths exactly; for g = 2, 4 at 0.25x/0.5x/1.5x it moves a width by at most 2g channels.
    """
    if groups not in STAGE2_WIDTH_1X:
        raise ValueError(f"ShuffleNet V1 is defined for groups in {sorted(STAGE2_WIDTH_1X)} (Table 1), got {groups}")
    if scale not in STEM_WIDTH:
        raise ValueError(
            f"ShuffleNet V1 scale must be one of {sorted(STEM_WIDTH)}, got {scale}; "
            f"for other widths pass widths=(stem, stage2, stage3, stage4)"
        )
    stage2 = make_divisible(STAGE2_WIDTH_1X[groups] * scale, 4 * groups)
    stem = -(-STEM_WIDTH[scale] // groups) * groups
    return stem, stage2, 2 * stage2, 4 * stage2


class ShuffleUnit(nn.Module):
    """ShuffleNet unit (Fig. 2b/2c).

    Main branch: 1x1 GConv -> BN -> ReLU -> shuffle -> 3x3 DWConv (stride) -> BN -> 1x1 GConv -> BN
    (no ReLU after the depthwise conv). Stride 1: ``relu(x + main)``. Stride 2: ``relu(cat(avgpool3x3s2(x), main))``
    with the main branch giving ``out - in`` channels. Bottleneck = out / 4 (Sec. 3.3). With ``se=True`` a
    squeeze-excitation gate rescales the main branch before the add / concat (as in SE-ResNet).

    ``shuffle_order="official"`` uses megvii's permutation instead of the paper's: output j takes input
    ``(j % n) * g + j // n`` with ``n = mid / g``, the inverse of the paper's (official blocks.py). It is the
    paper's shuffle with ``n`` groups, so the unit computes it as ``channel_shuffle(x, n)``. Converted megvii
    checkpoints use it where no weight permutation reproduces the official network (docs/weights.md).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int,
        first_groups: int | None = None,
        shuffle: bool = True,
        se: bool = False,
        shuffle_order: str = "paper",
    ) -> None:
        super().__init__()
        if shuffle_order not in SHUFFLE_ORDERS:
            raise ValueError(f"shuffle_order must be one of {SHUFFLE_ORDERS}, got {shuffle_order!r}")
        if stride not in (1, 2):
            raise ValueError(f"a ShuffleNet unit has stride 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleNet unit adds its input, so in and out widths must match "
                f"({in_channels} != {out_channels})"
            )
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        if branch_channels <= 0:
            raise ValueError(
                f"a stride-2 unit concatenates its input, so out_channels ({out_channels}) must exceed "
                f"in_channels ({in_channels})"
            )
        if out_channels % (4 * groups):
            raise ValueError(
                f"ShuffleNet unit width {out_channels} does not fit groups={groups}: the bottleneck (width / 4) must "
                f"split into {groups} groups, so the width must be a multiple of {4 * groups}"
            )
        mid_channels = out_channels // 4
        first_groups = groups if first_groups is None else first_groups
        self.stride = stride
        self.pw1 = ConvBNAct(in_channels, mid_channels, 1, groups=first_groups)
        shuffle_groups = groups if shuffle_order == "paper" else mid_channels // groups
        self.shuffle = ChannelShuffle(shuffle_groups) if shuffle and groups > 1 else nn.Identity()
        self.dw = ConvBNAct(mid_channels, mid_channels, 3, stride, groups=mid_channels, act=None)
        self.pw2 = ConvBNAct(mid_channels, branch_channels, 1, groups=groups, act=None)
        # SE placement and ratio are not published: ratio 16 (SENet's default) gives Table 5's 527 MFLOPs at 2x g=3.
        self.se = SqueezeExcite(branch_channels) if se else nn.Identity()
        # count_include_pad=True (PyTorch's default): borders divide by 9, as in the official code.
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.pw2(self.dw(self.shuffle(self.pw1(x)))))
        if self.stride == 1:
            return self.act(out + x)
        return self.act(torch.cat((self.shortcut(x), out), 1))


def table1_layers(
    widths: Sequence[int],
    repeats: Sequence[int],
    unit: Callable[[int, int, int, int, int], nn.Module],
    small_input: bool = False,
) -> list[Layer]:
    """The Table 1 skeleton as builder rows: 3x3 stem conv (stride 2) and 3x3 max-pool (stride 2), then stages 2-4,
    each ``repeats[i]`` units whose first has stride 2, widths ``widths = (stem, stage 2, stage 3, stage 4)``.

    ``unit(in_channels, out_channels, stride, stage, index)`` builds one unit; the Table 4 comparison structures
    keep this skeleton and pass their own. ``small_input`` (32x32 images): stride-1 stem and no max-pool, so the
    network downsamples 8x instead of 32x; nothing else changes.
    """
    if len(widths) != 4 or len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"expected 4 widths (stem + 3 stages) and 3 positive repeats, got {widths} and {repeats}")
    stem, *stages = widths
    stride = 1 if small_input else 2
    layers = [Layer("stem", lambda c: ConvBNAct(c, stem, 3, stride=stride), stem, stride),
              Layer("pool", lambda c: nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1), stem, stride)]
    for stage, (width, repeat) in enumerate(zip(stages, repeats), start=2):
        def build(in_width: int, stage: int = stage, width: int = width, repeat: int = repeat) -> nn.Sequential:
            return nn.Sequential(*(unit(in_width if i == 0 else width, width, 2 if i == 0 else 1, stage, i)
                                   for i in range(repeat)))
        layers.append(Layer(f"stage{stage}", build, width, 2))
    return layers


class ShuffleNetV1(ImageClassifier):
    """ShuffleNet V1 of Table 1.

    Args:
        groups: g, the group count of the pointwise convolutions (1, 2, 3, 4 or 8).
        scale: s, the width multiplier ("ShuffleNet s x"): 0.25, 0.5, 1.0, 1.5 or 2.0.
        widths: explicit (stem, stage 2, stage 3, stage 4) widths; overrides ``scale``.
        repeats: units per stage (Table 1: 4, 8, 4).
        shuffle: False removes every channel shuffle (Table 3 ablation).
        se: squeeze-excitation in every unit (Table 5, "with SE").
        small_input: for 32x32 images: the stem conv has stride 1 and the max-pool is dropped (see
            ``table1_layers``).
        zero_init_last: start the last BN scale of every stride-1 unit at 0, so each such unit begins as the
            identity (Goyal et al., 2017); docs/models.md says why it is on by default.
        shuffle_order: "paper" (Sec. 3.1) or "official" (megvii's inverse permutation, see ``ShuffleUnit``).
        features_only, out_indices, frozen_stages, norm_eval: the backbone options of ``ImageClassifier``.
    """

    def __init__(
        self,
        groups: int = 3,
        scale: float = 1.0,
        widths: Sequence[int] | None = None,
        repeats: Sequence[int] = STAGE_REPEATS,
        shuffle: bool = True,
        se: bool = False,
        small_input: bool = False,
        zero_init_last: bool = True,
        shuffle_order: str = "paper",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **backbone: Any,
    ) -> None:
        if widths is None:
            widths = shufflenet_v1_widths(scale, groups)
        elif groups not in STAGE2_WIDTH_1X:
            raise ValueError(f"ShuffleNet V1 is defined for groups in {sorted(STAGE2_WIDTH_1X)} (Table 1), "
                             f"got {groups}")
        if len(widths) == 4 and widths[0] % groups:
            raise ValueError(
                f"stem width {widths[0]} is not a multiple of groups={groups}: the first unit's main branch "
                f"({widths[1]} - {widths[0]} channels) must split into {groups} groups"
            )

        def unit(in_channels: int, out_channels: int, stride: int, stage: int, index: int) -> ShuffleUnit:
            # Table 1 note: the first pointwise layer of stage 2 is not grouped (only 24 input channels).
            first_groups = 1 if stage == 2 and index == 0 else groups
            return ShuffleUnit(in_channels, out_channels, stride, groups, first_groups, shuffle, se, shuffle_order)

        super().__init__(
            table1_layers(widths, repeats, unit, small_input),
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            classifier_bias=False,  # the official classifier is Linear(C, classes, bias=False)
            **backbone,
        )
        if zero_init_last:
            zero_init_residual_ends(self, ShuffleUnit, lambda unit: unit.pw2.bn)
        self.groups = groups
        self.widths = tuple(widths)
        self.repeats = tuple(repeats)
        self.shuffle = shuffle
        self.se = se
        self.small_input = small_input
        self.shuffle_order = shuffle_order
        self.too_small_hint = "" if small_input else "; for 32x32 images build the model with small_input=True"

