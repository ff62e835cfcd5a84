"""One builder for every family: a table of layers becomes the ``features`` trunk, its feature levels and the
shared interface (classifier and backbone).

A family describes its trunk as a list of :class:`Layer` rows (name, how to build it from its input width,
output width, stride). :func:`build_features` chains the widths, builds each row and records, while it builds,
where the feature levels are: the deepest layer at each output stride 4, 8, 16 and 32 (or the four deepest
strides when a small-input stem downsamples less). :class:`ImageClassifier` adds the pooled linear head and,
as timm's and mmpretrain's backbones do, ``features_only`` / ``out_indices`` / ``frozen_stages`` / ``norm_eval``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

FEATURE_STRIDES = (4, 8, 16, 32)  # the levels a detector's FPN takes (timm / torchvision convention)


@dataclass(frozen=True)
class Layer:
    """One child of ``features``: ``build(in_channels)`` makes it; it outputs ``channels`` at ``stride``."""

    name: str
    build: Callable[[int], nn.Module]
    channels: int
    stride: int


@dataclass(frozen=True)
class FeatureInfo:
    """A feature level: the output of ``features[index]`` (named ``name``), ``channels`` wide, at stride
    ``reduction``."""

    index: int
    name: str
    channels: int
    reduction: int


def build_features(in_chans: int, layers: Sequence[Layer]) -> tuple[nn.Sequential, list[FeatureInfo]]:
    """Build the rows in order, each taking the previous row's width, and find the feature levels."""
    features = nn.Sequential()
    width, reduction = in_chans, 1
    deepest: dict[int, FeatureInfo] = {}
    for index, layer in enumerate(layers):
        features.add_module(layer.name, layer.build(width))
        width, reduction = layer.channels, reduction * layer.stride
        deepest[reduction] = FeatureInfo(index, f"features.{layer.name}", width, reduction)
    levels = [deepest[s] for s in FEATURE_STRIDES] if set(FEATURE_STRIDES) <= set(deepest) else \
        [deepest[s] for s in sorted(deepest)[-len(FEATURE_STRIDES):]]
    return features, levels


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


def zero_init_residual_ends(model: nn.Module, unit_type: type, last_bn: Callable[[nn.Module], nn.Module]) -> None:
    """Zero the last BN scale of every stride-1 unit of ``unit_type`` in ``model``: each residual unit then
    starts as the identity (Goyal et al., 2017)."""
    for unit in model.modules():
        if isinstance(unit, unit_type) and unit.stride == 1:
            nn.init.zeros_(last_bn(unit).weight)


class ImageClassifier(nn.Module):
    """``features`` (built from ``layers``) -> global average pool -> dropout -> linear ``classifier``.

    The timm interface: ``num_classes``, ``forward_features``, ``forward_head``, ``reset_classifier``. As a
    backbone (``features_only=True``), ``forward`` returns the maps of the feature levels in ``out_indices``
    (default all four), listed in ``feature_info``. ``frozen_stages=k`` freezes every layer up to feature level
    ``k`` (-1: none; 0: the stem, up to stride 4; 1: also the next stage, ...), parameters and BN statistics;
    ``norm_eval=True`` keeps every BN layer in eval mode while training (mmpretrain's options, for detectors).
    """

    too_small_hint: str = ""  # extra advice for the "input too small" error

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        classifier_bias: bool,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
        self.features, levels = build_features(in_chans, layers)
        out_indices = tuple(range(len(levels))) if out_indices is None else tuple(out_indices)
        if not out_indices or any(not 0 <= i < len(levels) for i in out_indices):
            raise ValueError(f"out_indices must pick among the {len(levels)} feature levels 0-{len(levels) - 1}, "
                             f"got {out_indices}")
        if not -1 <= frozen_stages < len(levels):
            raise ValueError(f"frozen_stages must be -1 (none) to {len(levels) - 1}, got {frozen_stages}")
        self.levels = levels
        self.out_indices = out_indices
        self.feature_info = [levels[i] for i in out_indices]
        self.num_features = layers[-1].channels
        self.in_chans = in_chans
        self.min_input_size = levels[-1].reduction
        self.features_only = features_only
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.drop_rate = drop_rate
        self.classifier_bias = classifier_bias
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(0 if features_only else num_classes)
        init_weights(self)
        for parameter in self.frozen_layers().parameters():
            parameter.requires_grad_(False)

    def frozen_layers(self) -> nn.Sequential:
        """The layers that ``frozen_stages`` freezes (empty for -1)."""
        end = self.levels[self.frozen_stages].index + 1 if self.frozen_stages >= 0 else 0
        return self.features[:end]

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if mode:
            self.frozen_layers().eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

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
        """The maps of the feature levels in ``feature_info``, shallowest first."""
        wanted = {info.index for info in self.feature_info}
        last = self.feature_info[-1].index
        maps = []
        for index, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if index in wanted:
                maps.append(x)
        return maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.global_pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))
