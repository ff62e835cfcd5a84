"""Channel equalization before int8: exact per-channel rescaling of a rewritten ShuffleNet so that one
quantization scale per activation tensor fits every channel.

Why: int8 activations get one scale per tensor, and ShuffleNet's channels span very different ranges: the
depthwise conv output (no ReLU after it, Fig. 2) has outlier channels far above the rest (BN-folded filters of
near-dead channels are large), and in the residual stream of a stage the largest channel maximum is many times
the median one, so most channels keep only a few quantization levels (measurements: docs/deploy.md).

How: positive per-channel rescaling between consecutive layers (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019, Sec. 4.1), with the scales taken from activation ranges
on calibration images. A channel with activation range a_c read by weights of range w_c gets s_c =
sqrt(w_c / a_c): its activation range becomes sqrt(a_c w_c), as does the range of the weights that read it,
which balances activation against weight precision where the reading weights are quantized per output
channel (across the rescaled input columns). Rescaled, per unit and per stage:

1. First pointwise conv -> ReLU -> depthwise conv (ReLU commutes with a positive scale): s_c = 1 / a_c,
   since both convs are quantized per output channel and lose nothing.
2. Depthwise conv -> (shuffle) -> second pointwise conv, with nothing non-linear between them.
3. The residual stream of each stage (the stem's output and every unit's output of a stage share one scale
   per channel; ReLU, max-pool and global pooling commute with it): produced by the stem conv, the stride-2
   unit's shortcut and second pointwise convs, the stride-1 units' second pointwise convs; read by the first
   pointwise convs, the next shortcut and the classifier.

The network computes the same function up to float rounding (the export's parity check verifies it).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .blocked_layout import BlockedShuffleUnit

SCALE_LIMIT = 1e4  # keeps every rescaled weight well inside float32's precise range
STAGES = ("stage2", "stage3", "stage4")


def balanced(activation: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-channel scales: sqrt(weight / activation) (1 / activation when ``weight`` is None), divided by their
    geometric mean and clamped; channels that never activate (or are never read) keep 1."""
    live = activation > 1e-6 * activation.max()
    ratio = 1 / activation.clamp(min=1e-30)
    if weight is not None:
        live &= weight > 0
        ratio = (weight * ratio).sqrt()
    scale = torch.ones_like(activation)
    if live.any():
        scale[live] = (ratio[live] / ratio[live].log().mean().exp()).clamp(1 / SCALE_LIMIT, SCALE_LIMIT)
    return scale


def input_column_range(conv: nn.Conv2d) -> torch.Tensor:
    """Largest |weight| reading each input channel of a (grouped) 1x1 conv."""
    groups = conv.groups
    return conv.weight.view(groups, conv.out_channels // groups, -1).abs().amax(1).flatten()


def divide_input_channels(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """Divide the weights reading input channel c of a (grouped) 1x1 conv by scale[c]."""
    groups = conv.groups
    conv.weight.view(groups, conv.out_channels // groups, -1).div_(scale.view(groups, 1, -1))


def scale_output_channels(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    if conv.bias is not None:
        conv.bias.mul_(scale)


def channel_maxima(model: nn.Module, modules: dict[str, nn.Module], calibration: torch.Tensor,
                   transform: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-channel maximum of ``transform[name](output)`` of each named module over the calibration images."""
    maxima: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            current = transform[name](output).amax((0, 2, 3))
            maxima[name] = torch.maximum(maxima[name], current) if name in maxima else current
        return hook

    hooks = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    try:
        for start in range(0, len(calibration), 32):
            model(calibration[start:start + 32])
    finally:
        for hook in hooks:
            hook.remove()
    return maxima


def equalize_streams(model: nn.Module, calibration: torch.Tensor) -> None:
    """Step 3 on a rewritten ShuffleNetV1 classifier (stem, stage2-4 of BlockedShuffleUnits, linear classifier)."""
    stem = model.features.stem.conv
    stages = [list(getattr(model.features, name)) for name in STAGES]
    modules = {"stem": model.features.stem, **{f"{k}.{i}": unit for k, units in enumerate(stages)
                                                for i, unit in enumerate(units)}}
    maxima = channel_maxima(model, modules, calibration, {name: torch.relu for name in modules})
    scales = []
    for k, units in enumerate(stages):  # the stream before stage k (the stem's output for k = 0)
        stream = maxima["stem"] if k == 0 else torch.stack(
            [maxima[f"{k - 1}.{i}"] for i in range(len(stages[k - 1]))]).amax(0)
        readers = [units[0].pw1] + ([] if k == 0 else [u.pw1 for u in stages[k - 1][1:]])
        scales.append(balanced(stream, torch.stack([input_column_range(conv) for conv in readers]).amax(0)))
    last = torch.stack([maxima[f"2.{i}"] for i in range(len(stages[2]))]).amax(0)
    readers = torch.stack([input_column_range(u.pw1) for u in stages[2][1:]] + [model.classifier.weight.abs().amax(0)])
    scales.append(balanced(last, readers.amax(0)))
    scale_output_channels(stem, scales[0])
    for k, units in enumerate(stages):
        before, after = scales[k], scales[k + 1]
        first = units[0]
        in_channels = first.pw1.in_channels
        divide_input_channels(first.pw1, before)
        first.shortcut.weight.mul_((after[:in_channels] / before).view(-1, 1, 1, 1))  # depthwise: c -> c
        scale_output_channels(first.pw2, after[in_channels:])
        for unit in units[1:]:
            divide_input_channels(unit.pw1, after)
            scale_output_channels(unit.pw2, after)
    model.classifier.weight.div_(scales[-1].view(1, -1))


def equalize_units(model: nn.Module, calibration: torch.Tensor) -> None:
    """Steps 1 and 2 on every BlockedShuffleUnit."""
    units = {str(i): unit for i, unit in enumerate(m for m in model.modules() if isinstance(m, BlockedShuffleUnit))}
    first = channel_maxima(model, {name: unit.pw1 for name, unit in units.items()}, calibration,
                           {name: torch.relu for name in units})
    depthwise = channel_maxima(model, {name: unit.dw for name, unit in units.items()}, calibration,
                               {name: torch.abs for name in units})
    for name, unit in units.items():
        scale = balanced(first[name], None)
        scale_output_channels(unit.pw1, scale)
        unit.dw.weight.div_(scale.view(-1, 1, 1, 1))
        # The depthwise output is unchanged by that; the second conv reads it through the shuffle's Gather.
        order = unit.order if unit.order is not None else torch.arange(unit.dw.out_channels)
        read = torch.zeros(unit.dw.out_channels).scatter_reduce(0, order, input_column_range(unit.pw2), "amax")
        scale = balanced(depthwise[name], read)
        scale_output_channels(unit.dw, scale)
        divide_input_channels(unit.pw2, scale[order])


def has_plain_streams(model: nn.Module) -> bool:
    """Whether :func:`equalize_streams` applies: a classifier over stem + stages 2-4 of SE-free units."""
    features = getattr(model, "features", None)
    if not all(hasattr(features, name) for name in ("stem",) + STAGES) or not isinstance(
            getattr(model, "classifier", None), nn.Linear) or getattr(model, "features_only", True):
        return False
    units = [unit for name in STAGES for unit in getattr(features, name)]
    return all(isinstance(u, BlockedShuffleUnit) and isinstance(u.se, nn.Identity) for u in units) and all(
        isinstance(getattr(features, name)[0].shortcut, nn.Conv2d) for name in STAGES)


@torch.no_grad()
def equalize_for_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """Rescale, in place, a model rewritten by :func:`rewrite_for_blocked_layout`, from activation ranges on the
    ``calibration`` images; returns ``model`` (unchanged when it has no ShuffleNet unit)."""
    model.eval()
    if has_plain_streams(model):
        equalize_streams(model, calibration)
    equalize_units(model, calibration)
    return model
