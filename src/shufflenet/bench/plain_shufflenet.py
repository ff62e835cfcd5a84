"""A plain, straightforward ShuffleNet V1 in PyTorch, the yardstick for our eager speed (the deployment target:
eager PyTorch no slower than a plain straightforward implementation of the same network).

Written directly from the paper (Fig. 2, Table 1) the way a first implementation would be: ``nn.Sequential``
branches, the shuffle as view-transpose-reshape, ``F.relu``; no input checks, no registry. The module names
mirror ours, so our state dict loads into it and both compute the same function; with the reference's
small-input stem (stride-1 stem conv, no max-pool) for 32x32 training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.shufflenet_v1 import ShuffleNetV1


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Plain on purpose, not ``models.layers.ChannelShuffle``: the yardstick is what a first implementation
    writes, so it shares none of our code."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class PlainUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = cout // 4
        self.stride, self.groups = stride, groups
        self.pw1 = conv_bn(cin, mid, 1, groups=first_groups)
        self.dw = conv_bn(mid, mid, 3, stride, groups=mid)
        self.pw2 = conv_bn(mid, cout - cin if stride == 2 else cout, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.dw(shuffle(F.relu(self.pw1(x)), self.groups)))
        if self.stride == 2:
            return F.relu(torch.cat((F.avg_pool2d(x, 3, 2, 1), out), 1))
        return F.relu(x + out)


class PlainShuffleNet(nn.Module):
    def __init__(self, reference: ShuffleNetV1) -> None:
        super().__init__()
        stem, *stages = reference.widths
        groups = reference.groups
        small = reference.small_input
        features = {"stem": conv_bn(3, stem, 3, 1 if small else 2), "pool": nn.Identity() if small else
                    nn.MaxPool2d(3, 2, 1)}
        cin = stem
        for index, (width, repeat) in enumerate(zip(stages, reference.repeats), start=2):
            features[f"stage{index}"] = nn.Sequential(*[
                PlainUnit(cin if i == 0 else width, width, 2 if i == 0 else 1, groups,
                          1 if index == 2 and i == 0 else groups)
                for i in range(repeat)
            ])
            cin = width
        self.features = nn.Sequential()
        for name, module in features.items():
            self.features.add_module(name, module)
        self.classifier = nn.Linear(cin, reference.num_classes, bias=False)
        # Our ConvBNAct names its parts conv / bn; the plain Sequential numbers them.
        self.load_state_dict({key.replace(".conv.", ".0.").replace(".bn.", ".1."): value
                              for key, value in reference.state_dict().items()})
        self.train(reference.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[1](F.relu(self.features[0](x)))
        for stage in list(self.features)[2:]:
            x = stage(x)
        return self.classifier(x.mean((2, 3)))
