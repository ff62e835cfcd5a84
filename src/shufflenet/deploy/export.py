"""Export for deployment: ONNX (dynamic batch, BN folded, preprocessing metadata) or TorchScript, each checked
against PyTorch before the file is written.

The ONNX graph goes through :func:`rewrite_for_blocked_layout` (identical outputs, faster in ONNX Runtime;
pass ``rewrite=False`` for the plain BN-folded graph). The parity check (:func:`check_parity`, the one of every
export, the detector's included) runs the exported file on random inputs at batch 1 and 3 and compares with the
original PyTorch model; above the tolerance nothing is written. What a file records comes from the model's
record (``model.record``).
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..io.atomic import atomic_output
from ..io.onnx_file import onnx_runner
from ..models.complexity import as_hw
from .blocked_layout import rewrite_for_blocked_layout
from .equalization import equalize_for_int8
from .folding import fold_batchnorm

# ONNX opset 18: every op these models need exists there, ONNX Runtime runs it from 1.14 on, and it is the
# lowest opset that torch's exporter emits (torch.onnx.export(dynamo=True)).
OPSET = 18
# Parity: max abs difference over the outputs' largest magnitude (at least 1), float32: the rounding error of a
# float32 graph grows with the size of its values (logits near 1, box corners in pixels).
PARITY_TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "image", "logits"
PARITY_BATCH_SIZES = (1, 3)


class ParityError(ValueError):
    """An exported file does not compute what the PyTorch model computes (and was not written)."""


def random_inputs(model: nn.Module, resolution: int | Sequence[int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, getattr(model, "in_chans", 3), *as_hw(resolution), generator=generator)


def check_parity(expected: Sequence[torch.Tensor], got: Sequence[torch.Tensor | np.ndarray], what: str,
                 tolerance: float = PARITY_TOLERANCE, hint: str = "") -> float:
    """The parity check of every export: ``got`` (the exported file's outputs) must have the shapes of
    ``expected`` (PyTorch's) and lie within ``tolerance`` times their largest magnitude (at least 1); else a
    :class:`ParityError` naming ``what``. Returns the max abs difference."""
    got = [torch.as_tensor(g) for g in got]
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        raise ParityError(f"{what} gives outputs of shapes {[tuple(g.shape) for g in got]} where the PyTorch model "
                          f"gives {[tuple(e.shape) for e in expected]}; the file was not written{hint}")
    diff = max([0.0] + [float((g - e).abs().max()) for g, e in zip(got, expected) if e.numel()])
    allowed = tolerance * max([1.0] + [float(e.abs().max()) for e in expected if e.numel()])
    if not diff <= allowed:  # also catches NaN
        raise ParityError(f"{what} differs from the PyTorch model by up to {diff:.3g} (tolerance {allowed:.3g}); "
                          f"the file was not written{hint}")
    return diff


def check_on_random_inputs(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
                           resolution: int | Sequence[int], what: str, tolerance: float, hint: str = "") -> float:
    """:func:`check_parity` of ``run`` (the exported file) against ``model`` on random inputs at each of
    ``PARITY_BATCH_SIZES``."""
    inputs = [random_inputs(model, resolution, batch, seed=batch) for batch in PARITY_BATCH_SIZES]
    with torch.inference_mode():
        expected = [model(x) for x in inputs]
        got = [run(x) for x in inputs]
    return check_parity(expected, got, what, tolerance, hint)


def export_metadata(model: nn.Module, num_classes: int, resolution: int, graph: str) -> dict[str, str]:
    """What an exported file records (ONNX ``metadata_props``, the record of a .pte), from the model's record:
    everything needed to feed it and read its output, and ``graph``, what the export did to the graph."""
    record = model.record
    metadata = {
        "model": record.architecture or type(model).__name__,
        "num_classes": str(num_classes),
        "preprocessing": record.preprocessing.for_resolution(resolution).to_json(),
        "graph": graph,
    }
    if record.class_names:
        metadata["class_names"] = json.dumps(record.class_names)
    return metadata


def export_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int | Sequence[int] | None = None,
    *,
    rewrite: bool = True,
    equalize_with: torch.Tensor | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Write ``model`` as ONNX (opset :data:`OPSET`, input ``image`` of shape (batch, C, H, W) with a dynamic
    batch axis, output ``logits``) and return the parity check's max abs difference. The file records the
    model's name, preprocessing (at ``resolution``, default its crop) and class names from ``model.record``.
    Raises :class:`ParityError` (and writes nothing) above ``tolerance``. ``equalize_with``: calibration images
    for :func:`equalize_for_int8` (for a file that is to be quantized; needs ``rewrite``)."""
    import onnx

    model = model.eval()
    resolution = resolution or model.record.preprocessing.crop
    deployable = rewrite_for_blocked_layout(model) if rewrite else fold_batchnorm(model)
    if equalize_with is not None:
        if not rewrite:
            raise ValueError("channel equalization works on the rewritten graph; drop --no-rewrite")
        equalize_for_int8(deployable, equalize_with)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's progress notes and deprecation chatter
        program = torch.onnx.export(
            deployable, (random_inputs(model, resolution, 2),), dynamo=True, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
        )
    proto = program.model_proto
    num_classes = int(proto.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
    metadata = export_metadata(model, num_classes, as_hw(resolution)[0],
                               "blocked-layout rewrite, BN folded" if rewrite else "BN folded")
    onnx.helper.set_model_props(proto, metadata)
    with atomic_output(path) as temporary:
        onnx.save(proto, str(temporary))
        return check_on_random_inputs(model, onnx_runner(temporary), resolution,
                                      f"the ONNX export of {metadata['model']}", tolerance,
                                      "; try --no-rewrite to rule out the graph rewrite" if rewrite else "")


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    resolution: int | Sequence[int] | None = None,
    *,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Write ``model`` BN-folded as a traced TorchScript file (the record's preprocessing at ``resolution``,
    default its crop, in its ``preprocessing.json`` extra file) and return the parity check's max abs
    difference; raises :class:`ParityError` above ``tolerance``."""
    model = model.eval()
    resolution = resolution or model.record.preprocessing.crop
    preprocessing = model.record.preprocessing.for_resolution(as_hw(resolution)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        traced = torch.jit.trace(fold_batchnorm(model), random_inputs(model, resolution, 2))
        with atomic_output(path) as temporary:
            torch.jit.save(traced, str(temporary), _extra_files={"preprocessing.json": preprocessing.to_json()})
            return check_on_random_inputs(model, torch.jit.load(str(temporary)), resolution,
                                          "the TorchScript export", tolerance)
