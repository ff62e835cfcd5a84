"""One builder for every family: an architecture table of :class:`Row` s becomes the ``features`` trunk, its
feature levels and the shared interface (classifier and backbone).

A family writes its network as rows, as the papers print their tables (block, output channels, repeats, stride
of the first block, options); :func:`build_features` decodes them (timm's ``decode_arch_def`` is the model):
it chains the widths, applies the small-input rule, builds each block and records, while it builds, where the
feature levels are: the deepest layer at each output stride 4, 8, 16 and 32 (or the four deepest strides when a
small-input stem downsamples less). :class:`ImageClassifier` adds the pooled linear head and, as timm's and
mmpretrain's backbones do, ``features_only`` / ``out_indices`` / ``frozen_stages`` / ``norm_eval``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from .layers import ConvBNAct
from .record import FeatureInfo, ModelRecord, Recorded

FEATURE_STRIDES = (4, 8, 16, 32)  # the levels a detector's FPN takes (timm / torchvision convention)
SMALL_INPUT_ROWS = 2  # small_input: the first two stride-2 rows (the stem's 4x) run at stride 1


@dataclass(frozen=True)
class Row:
    """One row of an architecture table: ``repeats`` blocks ``block(in_channels, out_channels, stride=...,
    **options)``, each ``channels`` wide, the first with ``stride`` (and also ``first``'s options), the rest with
    stride 1.

    Where the blocks go in ``features``: with ``stage=True``, into one ``nn.Sequential`` child named ``name``
    (ShuffleNet's ``stage2``, its units ``stage2.0``, ...); else with a ``name``, the single block is that child
    (``stem``); else each block is a child of its own, numbered by position (MobileNet's ``features.1``, ...).
    """

    block: Callable[..., nn.Module]
    channels: int
    repeats: int = 1
    stride: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    first: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    stage: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.stride not in (1, 2) or self.channels < 1:
            raise ValueError(f"a row needs repeats >= 1, stride 1 or 2 and a positive width, got {self}")
        if self.name is not None and not self.stage and self.repeats != 1:
            raise ValueError(f"row {self.name!r} has {self.repeats} blocks; give it stage=True")

    def cells(self, child: str) -> tuple[str, str, int, int, int, str]:
        """The row as a table line: child, block, output channels, repeats, stride, options."""
        def shown(options: Mapping[str, Any]) -> str:
            return ", ".join(f"{key}={getattr(value, '__name__', value)}" for key, value in options.items())

        options = shown(self.options) + (f"; first block: {shown(self.first)}" if self.first else "")
        return child, self.block.__name__, self.channels, self.repeats, self.stride, options


ROW_HEADERS = ("child", "block", "channels", "repeats", "stride", "options")


def decode(rows: Sequence[Row], small_input: bool = False) -> list[tuple[list[str], Row]]:
    """Each row with the names of its children in ``features``; ``small_input`` (32x32 images) gives the first
    two stride-2 rows stride 1, so the network downsamples 8x instead of 32x (a max-pool of stride 1 is then no
    pool)."""
    decoded, position, slowed = [], 0, 0
    for row in rows:
        if small_input and row.stride == 2 and slowed < SMALL_INPUT_ROWS:
            row, slowed = replace(row, stride=1), slowed + 1
        names = [row.name] if row.name else [str(position + i) for i in range(row.repeats)]
        decoded.append((names, row))
        position += len(names)
    return decoded


def build_features(in_chans: int, rows: Sequence[Row], small_input: bool = False
                   ) -> tuple[nn.Sequential, tuple[FeatureInfo, ...]]:
    """Build the decoded rows in order, each block taking the previous one's width, and find the feature
    levels."""
    features = nn.Sequential()
    width, reduction = in_chans, 1
    deepest: dict[int, FeatureInfo] = {}
    for names, row in decode(rows, small_input):
        blocks = [row.block(width if i == 0 else row.channels, row.channels, stride=row.stride if i == 0 else 1,
                            **row.options, **(row.first if i == 0 else {})) for i in range(row.repeats)]
        children = [nn.Sequential(*blocks)] if row.stage else blocks
        for i, (name, child) in enumerate(zip(names, children)):
            features.add_module(name, child)
            width, reduction = row.channels, reduction * (row.stride if i == 0 else 1)
            deepest[reduction] = FeatureInfo(len(features) - 1, f"features.{name}", width, reduction)
    levels = [deepest[s] for s in FEATURE_STRIDES] if set(FEATURE_STRIDES) <= set(deepest) else \
        [deepest[s] for s in sorted(deepest)[-len(FEATURE_STRIDES):]]
    return features, tuple(levels)


def first_conv_name(rows: Sequence[Row]) -> str:
    """The module name of the network's first convolution, without building it: every family's first row is a
    ``ConvBNAct`` stem, whose convolution is its child ``conv``."""
    if rows[0].block is not ConvBNAct:
        raise ValueError(f"the first row must be a ConvBNAct stem, got {rows[0].block.__name__}")
    (names, _), *_ = decode(rows[:1])
    return f"features.{names[0]}.conv"


def take_levels(indices: int | Sequence[int] | None, count: int) -> list[int]:
    """Feature levels by timm's convention for ``indices``: None, every level; an int ``n``, the last ``n``; a
    sequence, those levels (negative ones count from the end)."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"the last {indices} of {count} feature levels: choose 1 to {count}")
        return list(range(count - indices, count))
    levels = [i + count if i < 0 else i for i in indices]
    if not levels or any(not 0 <= i < count for i in levels):
        raise ValueError(f"out_indices must pick among the {count} feature levels 0-{count - 1}, got {tuple(indices)}")
    return levels


GLOBAL_POOLS: dict[str, Callable[[], nn.Module]] = {  # timm's names; "": no pooling (the map itself)
    "avg": lambda: nn.AdaptiveAvgPool2d(1), "max": lambda: nn.AdaptiveMaxPool2d(1), "": nn.Identity}


def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, small_input: bool) -> None:
    """Raise a ``ValueError`` naming the problem when ``x`` is not an image batch of ``in_chans`` channels, at
    least ``min_size`` pixels a side. A leaf of FX graphs (``torch.fx.wrap``): traced models keep the check."""
    if x.dim() != 4:
        raise ValueError(f"expected an image batch of shape (N, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
            f"convert the images or build the model with in_chans={x.shape[1]}"
        )
    height, width = x.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(
            f"input {height}x{width} is smaller than the network's total stride {min_size}; "
            f"resize the images to at least {min_size}x{min_size}"
            + ("" if small_input else "; for 32x32 images build the model with small_input=True")
        )


torch.fx.wrap("check_image_batch")


def architecture_table(rows: Sequence[Row], small_input: bool = False) -> list[tuple[str, str, int, int, int, str]]:
    """The decoded rows as table lines (headers: ``ROW_HEADERS``), without building anything."""
    return [row.cells(names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}")
            for names, row in decode(rows, small_input)]


def max_pool(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The 3x3 max-pool after a stem (ShuffleNet Table 1); at stride 1 (the small-input stem) no pool."""
    return nn.MaxPool2d(3, 2, 1) if stride == 2 else nn.Identity()


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


class ImageClassifier(Recorded, nn.Module):
    """``features`` -> global pool -> dropout -> linear ``classifier``; the model's :class:`ModelRecord` is
    ``record``.

    A family sets ``architecture``, the function from its arguments to its rows (the keyword arguments this class
    does not take go to it; ``rows`` keeps the result), and ``classifier_bias``.

    timm's model interface: ``num_classes``, ``num_features``, ``get_classifier``, ``reset_classifier``,
    ``forward_features``, ``forward_head``, ``forward_intermediates``, ``set_grad_checkpointing``; ``global_pool``
    is "avg" (the papers'), "max" or "" (none: ``forward_head`` returns the map; needs ``num_classes=0``). As a
    backbone (``features_only=True``), ``forward`` returns the maps of the feature levels in ``out_indices``
    (default all four), listed in ``feature_info``. ``frozen_stages=k`` freezes every layer up to feature level
    ``k`` (-1: none; 0: the stem, up to stride 4; 1: also the next stage, ...), parameters and BN statistics;
    ``norm_eval=True`` keeps every BN layer in eval mode while training (mmpretrain's options, for detectors).
    ``small_input``: for 32x32 images (see :func:`decode`). Every model is scriptable (``torch.jit.script``) and
    FX-traceable.
    """

    architecture: Callable[..., list[Row]]
    classifier_bias: bool = True

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        small_input: bool = False,
        features_only: bool = False,
        out_indices: int | Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        **arguments: Any,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the classifier), got {num_classes}")
        self.rows = self.architecture(**arguments)
        self.features, levels = build_features(in_chans, self.rows, small_input)
        out_indices = tuple(take_levels(out_indices, len(levels)))
        if not -1 <= frozen_stages < len(levels):
            raise ValueError(f"frozen_stages must be -1 (none) to {len(levels) - 1}, got {frozen_stages}")
        self.record = ModelRecord(None, num_classes, in_chans=in_chans, first_conv=first_conv_name(self.rows),
                                  classifier="classifier", feature_info=levels)
        self.out_indices = out_indices
        self.feature_info = [levels[i] for i in out_indices]
        self.out_layers = [info.index for info in self.feature_info]  # positions in ``features``, for forward
        self.num_features = self.rows[-1].channels
        self.small_input = small_input
        self.min_input_size = levels[-1].reduction
        self.features_only = features_only
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(0 if features_only else num_classes, global_pool)
        init_weights(self)
        for parameter in self.frozen_layers().parameters():
            parameter.requires_grad_(False)

    def frozen_layers(self) -> nn.Sequential:
        """The layers that ``frozen_stages`` freezes (empty for -1)."""
        end = self.record.feature_info[self.frozen_stages].index + 1 if self.frozen_stages >= 0 else 0
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

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: no classifier, pooled features);
        the record's class names go with the old one. ``global_pool``: a new pooling (see the class), else kept."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool must be one of {sorted(GLOBAL_POOLS)}, got {global_pool!r}")
            self.global_pool = GLOBAL_POOLS[global_pool]()
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
            self.pool_type = global_pool
        if num_classes > 0 and not self.pool_type:
            raise ValueError("a linear classifier needs pooled features: give global_pool='avg' or num_classes=0")
        self.record = self.record.replace(num_classes=num_classes, class_names=None)
        self.classifier = (
            nn.Linear(self.num_features, num_classes, bias=self.classifier_bias) if num_classes > 0 else nn.Identity()
        )
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer of ``features`` in the backward pass instead of keeping its activations (training
        memory for time; eager mode only)."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (stride 32 with the standard stem), before pooling."""
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_sequential(self.features, len(self.features), x, use_reentrant=False)
        return self.features(x)

    def feature_maps(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The outputs of the ``features`` layers at positions ``layers`` (increasing), running no layer after
        the last of them."""
        maps: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            if index <= layers[-1]:
                x = layer(x)
                if index in layers:
                    maps.append(x)
        return maps

    def forward_feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of the feature levels in ``feature_info``, shallowest first."""
        return self.feature_maps(x, self.out_layers)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the maps of the feature levels ``indices`` (see :func:`take_levels`), and unless
        ``intermediates_only`` also the last feature map (all layers run unless ``stop_early``). ``norm``: these
        networks have no final norm layer, so it changes nothing; ``output_fmt``: only "NCHW"."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (these are convolutional maps), got {output_fmt!r}")
        check_image_batch(x, self.in_chans, self.min_input_size, self.small_input)
        levels = self.record.feature_info
        layers = [levels[i].index for i in take_levels(indices, len(levels))]
        maps = self.feature_maps(x, layers)
        if intermediates_only:
            return maps
        if stop_early or layers[-1] == len(self.features) - 1:
            return maps[-1], maps
        return self.features[layers[-1] + 1:](maps[-1]), maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if not torch.jit.is_scripting():
            check_image_batch(x, self.in_chans, self.min_input_size, self.small_input)
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))
