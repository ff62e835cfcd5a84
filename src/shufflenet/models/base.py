"""The interface every model shares: a ``features`` trunk, a pooled linear head, and a backbone mode.

Like timm's models: ``num_classes``, ``forward_features``, ``forward_head``, ``reset_classifier`` and
``features_only=True`` (``forward`` then returns the feature maps at output strides 4, 8, 16 and 32).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone output: taken after ``features[index]``, with ``channels`` channels at stride ``reduction``."""

    index: int
    name: str
    channels: int
    reduction: int


def feature_info_at_strides(
    features: nn.Sequential, channels: Sequence[int], strides: Sequence[int], wanted: Sequence[int] = (4, 8, 16, 32)
) -> list[FeatureInfo]:
    """The last block of ``features`` that runs at each cumulative stride in ``wanted`` (the deepest map there).

    ``channels[i]`` and ``strides[i]`` describe the output of ``features[i]``. With a small-input stem that does
    not downsample, the strides are smaller; the four deepest distinct strides are then taken instead.
    """
    cumulative, reduction = [], 1
    for stride in strides:
        reduction *= stride
        cumulative.append(reduction)
    distinct = sorted(set(cumulative))
    if not set(wanted) <= set(distinct):
        wanted = distinct[-len(wanted):]
    names = [name for name, _ in features.named_children()]
    infos = []
    for target in wanted:
        index = max(i for i, r in enumerate(cumulative) if r == target)
        infos.append(FeatureInfo(index, f"features.{names[index]}", channels[index], target))
    return infos


def init_weights(model: nn.Module) -> None:
    """He (fan-out) normal for convolutions, BN weight 1 / bias 0, N(0, 0.01) for linear layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class ImageClassifier(nn.Module):
    """``features`` (an ``nn.Sequential``) -> global average pool -> dropout -> linear ``classifier``.

    Subclasses build their trunk and its per-block output channels and strides, then call this constructor.
    """

    too_small_hint: str = ""  # extra advice for the "input too small" error

    def __init__(
        self,
        features: nn.Sequential,
        block_channels: Sequence[int],
        block_strides: Sequence[int],
        *,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        classifier_bias: bool,
        features_only: bool,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
        self.features = features
        self.feature_info = feature_info_at_strides(features, block_channels, block_strides)
        self.num_features = block_channels[-1]
        self.in_chans = in_chans
        self.min_input_size = self.feature_info[-1].reduction
        self.features_only = features_only
        self.drop_rate = drop_rate
        self.classifier_bias = classifier_bias
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(0 if features_only else num_classes)
        init_weights(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: no classifier, pooled features)."""
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes, bias=self.classifier_bias) if num_classes > 0 else nn.Identity()
        )
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming the problem when ``x`` is not an image batch this network can take."""
        if x.dim() != 4:
            raise ValueError(f"expected an image batch of shape (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                f"convert the images or build the model with in_chans={x.shape[1]}"
            )
        height, width = x.shape[-2:]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"input {height}x{width} is smaller than the network's total stride {self.min_input_size}; "
                f"resize the images to at least {self.min_input_size}x{self.min_input_size}"
                + self.too_small_hint
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (stride 32 with the standard stem), before pooling."""
        return self.features(x)

    def forward_feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps listed in ``feature_info`` (strides 4, 8, 16, 32 with the standard stem)."""
        wanted = {info.index for info in self.feature_info}
        maps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in wanted:
                maps.append(x)
            if index == self.feature_info[-1].index:
                break
        return maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))
