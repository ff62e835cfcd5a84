"""The comparison structures of ShuffleNet Table 4: the Table 1 skeleton with the units of Stages 2-4 replaced.

Sec. 4.2 keeps the network of Table 1 (3x3 stem conv and max-pool, stages of 4 / 8 / 4 units whose first has
stride 2, widths doubling per stage) and swaps the ShuffleNet unit for:

- ``vgg``: two 3x3 convolutions, each followed by BN and ReLU (no shortcut);
- ``resnet``: the bottleneck unit, 1x1 -> 3x3 -> 1x1, bottleneck ratio 1:4;
- ``xception``: the ShuffleNet unit without pointwise group convolution and without shuffle (= g = 1);
- ``resnext``: the bottleneck with a grouped 3x3 of cardinality 16, bottleneck ratio 1:2.

The residual structures handle stride 2 as the ShuffleNet unit does (a 3x3 average-pooled shortcut
concatenated with a main branch of ``out - in`` channels), so that only the units' convolutions differ from
ShuffleNet's; the bottleneck width is a fraction of the full output width, as in ShuffleNet (Sec. 3.3).
Channel numbers are adapted so that each structure costs what its ShuffleNet counterpart costs (the table
of widths and how it was chosen: ``TABLE4_WIDTHS`` and docs/models.md).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .builder import ImageClassifier, Row, max_pool, zero_init_residual_ends
from .layers import ConvBNAct
from .registry import register_model
from .shufflenet_v1 import STAGE_REPEATS, ShuffleUnit, table1_rows

STRUCTURES = ("vgg", "resnet", "xception", "resnext")
RESNEXT_CARDINALITY = 16  # Table 4 text: "cardinality = 16, bottleneck ratio = 1:2"
BOTTLENECK_RATIO = {"resnet": 4, "resnext": 2, "xception": 4}  # output width / bottleneck width

# (stem, stage 2, stage 3, stage 4) widths per structure and budget. The budgets' ShuffleNet models are Table 4's:
# 1x g=8 (138.4 MFLOPs), 0.5x g=4 (40.7), 0.25x g=8 (15.7). Stage-4 widths at 38 MFLOPs are the paper's
# (Sec. 4.2: VGG-like 50, ResNet 192, ResNeXt 192, Xception-like 288); the rest are ours, each structure within
# 5% of its ShuffleNet counterpart's MFLOPs at 224x224 (docs/models.md).
TABLE4_BUDGETS = {140: "shufflenet_v1_x1_0_g8", 38: "shufflenet_v1_x0_5_g4", 13: "shufflenet_v1_x0_25_g8"}
TABLE4_WIDTHS: dict[str, dict[int, tuple[int, int, int, int]]] = {
    "vgg": {140: (12, 25, 50, 99), 38: (16, 12, 25, 50), 13: (12, 7, 14, 29)},
    "resnet": {140: (24, 96, 192, 400), 38: (24, 48, 96, 192), 13: (16, 32, 48, 112)},
    "xception": {140: (24, 140, 284, 568), 38: (16, 72, 144, 288), 13: (16, 40, 76, 152)},
    "resnext": {140: (24, 96, 192, 352), 38: (8, 64, 96, 192), 13: (8, 32, 64, 96)},
}


class VGGBlock(nn.Sequential):
    """Two 3x3 convolutions (the first with the block's stride), each followed by BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(ConvBNAct(in_channels, out_channels, 3, stride), ConvBNAct(out_channels, out_channels, 3))


class Bottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> 3x3 (``cardinality`` groups, stride) -> BN -> ReLU -> 1x1 -> BN, then
    ``relu(x + main)`` (stride 1) or ``relu(cat(avgpool3x3s2(x), main))`` (stride 2, main: ``out - in``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, ratio: int, cardinality: int = 1) -> None:
        super().__init__()
        branch = out_channels - in_channels if stride == 2 else out_channels
        mid = out_channels // ratio
        if branch <= 0 or (stride == 1 and in_channels != out_channels) or mid % cardinality:
            raise ValueError(f"a bottleneck {in_channels} -> {out_channels} (stride {stride}, bottleneck {mid}, "
                             f"cardinality {cardinality}) does not fit; choose other widths")
        self.stride = stride
        self.pw1 = ConvBNAct(in_channels, mid, 1)
        self.conv = ConvBNAct(mid, mid, 3, stride, groups=cardinality)
        self.pw2 = ConvBNAct(mid, branch, 1, act=None)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.conv(self.pw1(x)))
        if self.stride == 1:
            return self.act(out + x)
        return self.act(torch.cat((self.shortcut(x), out), 1))


# Each structure's unit and its options (Sec. 4.2); Xception-like is the ShuffleNet unit with dense pointwise
# convs (g = 1) and no shuffle.
STRUCTURE_UNITS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "vgg": (VGGBlock, {}),
    "resnet": (Bottleneck, {"ratio": BOTTLENECK_RATIO["resnet"]}),
    "xception": (ShuffleUnit, {"groups": 1, "shuffle": False}),
    "resnext": (Bottleneck, {"ratio": BOTTLENECK_RATIO["resnext"], "cardinality": RESNEXT_CARDINALITY}),
}


def comparison_rows(structure: str, widths: Sequence[int], repeats: Sequence[int] = STAGE_REPEATS) -> list[Row]:
    """A Table 4 structure's rows; the arguments are :class:`ComparisonNet`'s."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    unit, options = STRUCTURE_UNITS[structure]
    return table1_rows(widths, repeats, unit, options)


class ComparisonNet(ImageClassifier):
    """A Table 4 comparison structure: ``structure`` (one of ``STRUCTURES``) units in the Table 1 skeleton with
    ``widths = (stem, stage 2, stage 3, stage 4)``; ``small_input`` as for ShuffleNet; residual units start as
    the identity (``zero_init_last``), as ShuffleNet's do."""

    architecture = staticmethod(comparison_rows)  # the rows, without building: registry.model_rows

    classifier_bias = False

    def __init__(self, zero_init_last: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if zero_init_last:
            zero_init_residual_ends(self, Bottleneck, lambda unit: unit.pw2.bn)
            zero_init_residual_ends(self, ShuffleUnit, lambda unit: unit.pw2.bn)
        self.widths = tuple(row.channels for row in self.rows if row.block is not max_pool)  # stem, stages 2-4


for _structure, _budgets in TABLE4_WIDTHS.items():  # Table 4's comparison structures at 140 / 38 / 13 MFLOPs
    for _budget, _widths in _budgets.items():
        register_model(f"table4_{_structure}_{_budget}m", ComparisonNet, structure=_structure, widths=_widths)
