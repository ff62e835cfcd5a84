"""ONNX export of a detector (torchvision's Faster R-CNN through the TorchScript-based exporter, as torchvision
supports it) or of its backbone with the feature pyramid, checked against PyTorch in ONNX Runtime (the exports'
one parity check, ``deploy.export.check_parity``) before the file is written."""
from __future__ import annotations

import contextlib
import io
import warnings
from copy import deepcopy
from pathlib import Path

import torch

from ..deploy.export import check_parity
from ..errors import first_line
from ..io.atomic import atomic_output
from ..io.onnx_file import onnx_session
from ..models.layers import set_shuffle_mode

OPSET = 17  # the TorchScript-based exporter, which torchvision's detection models need, emits up to 17 or 18


def exportable(detector: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``detector`` whose channel shuffles run as view-transpose-reshape: the TorchScript-based
    exporter has no ONNX form for ``aten::channel_shuffle``."""
    return set_shuffle_mode(deepcopy(detector), "reshape")


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
    size = size or detector.record.kwargs["min_size"]
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
            hint = "" if backbone_only else "; try --backbone-only"
            raise ValueError(f"the {what} could not be exported ({first_line(error)[:200]}){hint}") from None
        session = onnx_session(temporary)
        feed = {session.get_inputs()[0].name: (image[None] if backbone_only else image).numpy()}
        got = session.run(None, feed)
        got = got if backbone_only else [got[0], got[2]]  # torchvision's outputs: boxes, labels, scores
        diff = check_parity(expected, got, f"the ONNX {what}")
    return diff, what
