"""ShuffleNet V1 (Zhang et al., CVPR 2018): pointwise group convolutions with a channel shuffle.

Stem 3x3 conv s2 + 3x3 max-pool s2, stages 2-4 of ShuffleNet units, global pool, FC (paper Table 1).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .builder import ImageClassifier, Row, max_pool, zero_init_residual_ends
from .layers import ChannelShuffle, ConvBNAct, SqueezeExcite, make_divisible
from .registry import register_model, scale_tag

# Table 1: stage-2 output width of ShuffleNet 1x for each group count; stages 3 and 4 double it each time.
STAGE2_WIDTH_1X = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
# Table 1: units per stage (the first of each has stride 2).
STAGE_REPEATS = (4, 8, 4)
# Stem width per scale, before rounding up to a multiple of g. 0.5x-2x: official network.py (g=3 table:
# 12/24/24/48; with the round-up this also gives g=8's 16/24/24/48). 0.25x: our choice, same as 0.5x
# (keeps the paper's 13 MFLOPs; a 6-channel stem gives 11).
STEM_WIDTH = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
SHUFFLE_ORDERS = ("paper", "official")
# Table 5, "ShuffleNet 0.5x (shallow, g = 3)": half the units of stages 2-4 (26 layers). Widths are not
# published; these raise 0.5x g=3's 120/240/480 to 180/360/720 (12-channel stem): 41.6 MFLOPs, the multiple
# of 4g = 12 closest to the paper's 40 (168 gives 37.0).
SHALLOW_X0_5_G3_WIDTHS = (12, 180, 360, 720)
SHALLOW_REPEATS = (2, 4, 2)


def check_groups(groups: int) -> None:
    if groups not in STAGE2_WIDTH_1X:
        raise ValueError(f"ShuffleNet V1 is defined for groups in {sorted(STAGE2_WIDTH_1X)} (Table 1), got {groups}")


def shufflenet_v1_widths(scale: float, groups: int) -> tuple[int, int, int, int]:
    """(stem, stage 2, stage 3, stage 4) output widths of ShuffleNet ``scale``x with ``groups`` groups.

    Rounding rule: the stage-2 width is ``scale`` times Table 1's, rounded to the nearest multiple of ``4 g``
    (ties up) so that the bottleneck (width / 4) splits into g groups; the stem is rounded up to a multiple of g
    so that the first unit's main branch (stage width - stem width) does too. For g = 3 and 8 this reproduces the
    official widths exactly; for g = 2, 4 at 0.25x/0.5x/1.5x it moves a width by at most 2g channels.
    """
    check_groups(groups)
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


def table1_rows(
    widths: Sequence[int],
    repeats: Sequence[int],
    unit: Callable[..., nn.Module],
    options: Mapping[str, Any],
    stage2_first: Mapping[str, Any] | None = None,
) -> list[Row]:
    """The Table 1 skeleton as rows: 3x3 stem conv (stride 2) and 3x3 max-pool (stride 2), then stages 2-4, each
    ``repeats[i]`` ``unit`` blocks (with ``options``) whose first has stride 2, widths ``widths = (stem, stage 2,
    stage 3, stage 4)``; ``stage2_first``: extra options of the first unit of stage 2. The Table 4 comparison
    structures keep this skeleton with their own units."""
    if len(widths) != 4 or len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"expected 4 widths (stem + 3 stages) and 3 positive repeats, got {widths} and {repeats}")
    stem, *stages = widths
    rows = [Row(ConvBNAct, stem, stride=2, options={"kernel_size": 3}, name="stem"),
            Row(max_pool, stem, stride=2, name="pool")]
    for stage, (width, repeat) in enumerate(zip(stages, repeats), start=2):
        rows.append(Row(unit, width, repeat, 2, options, (stage2_first or {}) if stage == 2 else {},
                        name=f"stage{stage}", stage=True))
    return rows


def shufflenet_v1_rows(
    groups: int = 3,
    scale: float = 1.0,
    widths: Sequence[int] | None = None,
    repeats: Sequence[int] = STAGE_REPEATS,
    shuffle: bool = True,
    se: bool = False,
    shuffle_order: str = "paper",
) -> list[Row]:
    """ShuffleNet V1's rows (Table 1); the arguments are :class:`ShuffleNetV1`'s."""
    if widths is None:
        widths = shufflenet_v1_widths(scale, groups)
    else:
        check_groups(groups)
    if len(widths) == 4 and widths[0] % groups:
        raise ValueError(
            f"stem width {widths[0]} is not a multiple of groups={groups}: the first unit's main branch "
            f"({widths[1]} - {widths[0]} channels) must split into {groups} groups"
        )
    unit = {"groups": groups, "shuffle": shuffle, "se": se, "shuffle_order": shuffle_order}
    # Table 1 note: the first pointwise layer of stage 2 is not grouped (only 24 input channels).
    return table1_rows(widths, repeats, ShuffleUnit, unit, stage2_first={"first_groups": 1})


class ShuffleNetV1(ImageClassifier):
    """ShuffleNet V1 of Table 1.

    Args (``groups`` to ``shuffle_order`` go to :func:`shufflenet_v1_rows`):
        groups: g, the group count of the pointwise convolutions (1, 2, 3, 4 or 8).
        scale: s, the width multiplier ("ShuffleNet s x"): 0.25, 0.5, 1.0, 1.5 or 2.0.
        widths: explicit (stem, stage 2, stage 3, stage 4) widths; overrides ``scale``.
        repeats: units per stage (Table 1: 4, 8, 4).
        shuffle: False removes every channel shuffle (Table 3 ablation).
        se: squeeze-excitation in every unit (Table 5, "with SE").
        small_input: for 32x32 images: the stem conv has stride 1 and the max-pool is dropped
            (``builder.decode``).
        zero_init_last: start the last BN scale of every stride-1 unit at 0, so each such unit begins as the
            identity (Goyal et al., 2017); docs/models.md says why it is on by default.
        shuffle_order: "paper" (Sec. 3.1) or "official" (megvii's inverse permutation, see ``ShuffleUnit``).
        num_classes, in_chans, drop_rate, features_only, out_indices, frozen_stages, norm_eval: as for
            ``ImageClassifier``.
    """

    architecture = staticmethod(shufflenet_v1_rows)  # the rows, without building: registry.model_rows
    classifier_bias = False  # the official classifier is Linear(C, classes, bias=False)

    def __init__(self, zero_init_last: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if zero_init_last:
            zero_init_residual_ends(self, ShuffleUnit, lambda unit: unit.pw2.bn)
        unit = self.rows[-1].options
        self.groups, self.shuffle, self.se, self.shuffle_order = (
            unit["groups"], unit["shuffle"], unit["se"], unit["shuffle_order"])
        self.widths = tuple(row.channels for row in self.rows if row.block is not max_pool)  # stem, stages 2-4
        self.repeats = tuple(row.repeats for row in self.rows if row.stage)


for _scale in sorted(STEM_WIDTH):
    for _groups in sorted(STAGE2_WIDTH_1X):
        register_model(f"shufflenet_v1_{scale_tag(_scale)}_g{_groups}", ShuffleNetV1, groups=_groups, scale=_scale)
register_model(
    "shufflenet_v1_x0_5_g3_shallow", ShuffleNetV1, groups=3, widths=SHALLOW_X0_5_G3_WIDTHS, repeats=SHALLOW_REPEATS
)
register_model("shufflenet_v1_x2_0_g3_se", ShuffleNetV1, groups=3, scale=2.0, se=True)  # Table 5, "with SE"

