"""ONNX export of a detector (torchvision's Faster R-CNN through the TorchScript-based exporter, as torchvision
supports it) or of its backbone with the feature pyramid, checked against PyTorch in ONNX Runtime before the
file is written."""
from __future__ import annotations

import contextlib
import io
import warnings
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import atomic_output
from ..io.onnx_file import onnx_session
from ..models.layers import ChannelShuffle

OPSET = 17  # the TorchScript-based exporter, which torchvision's detection models need, emits up to 17 or 18
TOLERANCE = 1e-3  # max abs difference of feature maps / box coordinates, float32


class ReshapeShuffle(torch.nn.Module):
    """The channel shuffle as view-transpose-reshape, which the TorchScript-based exporter knows (it has no
    ONNX form for ``aten::channel_shuffle``); the same permutation as ``models.layers.channel_shuffle``."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def exportable(detector: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``detector`` whose channel shuffles are ``ReshapeShuffle``."""
    copy = deepcopy(detector)
    for parent in list(copy.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelShuffle):
                setattr(parent, name, ReshapeShuffle(child.groups))
    return copy


class BackboneOutputs(torch.nn.Module):
    """The detector's backbone (and pyramid) with its maps as a tuple, for export."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x).values())


def export_detector(detector: torch.nn.Module, path: str | Path, backbone_only: bool = False,
                    size: int | None = None) -> tuple[float, str]:
    """Write ``detector`` (or its backbone) as ONNX; returns the parity check's max abs difference and a
    description. Nothing is written when the export or the check fails."""
    size = size or detector.arch["kwargs"]["min_size"]
    detector = exportable(detector).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=generator)
    if backbone_only:
        module, inputs, what = BackboneOutputs(detector), (image[None],), f"backbone + pyramid, input 1x3x{size}x{size}"
    else:
        module, inputs, what = detector, ([image],), f"Faster R-CNN, one {size}x{size} image"
    with torch.no_grad():
        expected = module(*inputs)
    expected = list(expected) if backbone_only else [expected[0]["boxes"], expected[0]["scores"]]
    with atomic_output(path) as temporary:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(module, inputs, str(temporary), opset_version=OPSET, dynamo=False,
                                  input_names=["image"])
        except Exception as error:  # the exporter's failures are many and long
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = "" if backbone_only else "; try --backbone-only"
            raise ValueError(f"the {what} could not be exported ({first[:200]}){hint}") from None
        session = onnx_session(temporary)
        feed = {session.get_inputs()[0].name: (image[None] if backbone_only else image).numpy()}
        got = session.run(None, feed)
        got = got if backbone_only else [got[0], got[2]]  # torchvision's outputs: boxes, labels, scores
        if any(np.shape(g) != tuple(e.shape) for g, e in zip(got, expected)):
            raise ValueError(f"the ONNX {what} gives outputs of other shapes than PyTorch; the file was not written")
        diff = max((float(np.abs(g - e.numpy()).max()) if e.numel() else 0.0) for g, e in zip(got, expected))
        if not diff <= TOLERANCE:
            raise ValueError(f"the ONNX {what} differs from PyTorch by up to {diff:.3g} (tolerance {TOLERANCE}); "
                             f"the file was not written")
    return diff, what
