"""Multiply-adds and parameters, counted as the papers count them.

"FLOPs" in the ShuffleNet and MobileNet papers are multiply-adds of the convolutions and the FC layer
(ShuffleNet Table 1 caption); BN, activations, pooling, additions and the shuffle are not counted.
Parameters are the trainable tensors (conv and FC weights and biases, BN scale and shift), which is how the
official ShuffleNet and torchvision count them. The multiply-adds come from PyTorch's own
``torch.utils.flop_counter`` (which reports 2 FLOPs per multiply-add for convolutions and matrix products).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerCost:
    name: str
    kind: str
    macs: int
    params: int


@dataclass
class Profile:
    model: str
    resolution: int | tuple[int, int]  # square side, or (height, width)
    macs: int
    params: int
    stages: list[LayerCost] = field(default_factory=list)
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def mflops(self) -> float:
        """Millions of multiply-adds (the papers' "MFLOPs")."""
        return self.macs / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"mflops": self.mflops, **asdict(self)}


def as_hw(resolution: int | Sequence[int]) -> tuple[int, int]:
    """224 -> (224, 224); (480, 640) stays (height, width)."""
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return int(height), int(width)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def profile(model: nn.Module, resolution: int | tuple[int, int] = 224, name: str | None = None) -> Profile:
    """Count the multiply-adds of one ``resolution`` x ``resolution`` (or ``(height, width)``) image through
    ``model`` and its parameters, in total, per top-level block of ``model.features`` (plus the classifier) and
    per conv / linear layer.

    The model runs on its own device; build it under ``torch.device("meta")`` to count without computing.
    """
    in_chans = getattr(model, "in_chans", 3)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, in_chans, *as_hw(resolution), device=device))
    finally:
        model.train(was_training)
    flops_by_module = counter.get_flop_counts()
    root = type(model).__name__  # the counter names modules "<root class>.<path>"

    def macs_of(path: str) -> int:
        key = f"{root}.{path}" if path else root
        return sum(flops_by_module.get(key, {}).values()) // 2

    layers = [
        LayerCost(path, type(module).__name__, macs_of(path), count_params(module))
        for path, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    stage_modules = []
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        stage_modules += [(f"features.{child}", module) for child, module in features.named_children()]
    stage_modules += [(child, module) for child, module in model.named_children() if child != "features"]
    stages = [
        LayerCost(path, type(module).__name__, macs_of(path), count_params(module))
        for path, module in stage_modules
        if count_params(module) or macs_of(path)
    ]
    return Profile(
        model=name or type(model).__name__,
        resolution=resolution,
        macs=sum(flops_by_module.get("Global", {}).values()) // 2,
        params=count_params(model),
        stages=stages,
        layers=layers,
    )
