"""Export for deployment: ONNX (dynamic batch, BN folded, preprocessing metadata) or TorchScript, each checked
against PyTorch before the file is written.

The ONNX graph goes through :func:`rewrite_for_blocked_layout` (identical outputs, faster in ONNX Runtime;
pass ``rewrite=False`` for the plain BN-folded graph). The parity check runs the exported file on random
inputs at batch 1 and 3 and compares with the original PyTorch model; above the tolerance nothing is written.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import IMAGENET, Preprocessing
from ..io.atomic import atomic_output
from ..io.onnx_file import onnx_runner
from ..models.complexity import as_hw
from .blocked_layout import rewrite_for_blocked_layout
from .equalization import equalize_for_int8
from .folding import fold_batchnorm

# ONNX opset 18: every op these models need exists there, ONNX Runtime runs it from 1.14 on, and it is the
# lowest opset that torch's exporter emits (torch.onnx.export(dynamo=True)).
OPSET = 18
PARITY_TOLERANCE = 1e-4  # max abs difference of the logits, float32
INPUT_NAME, OUTPUT_NAME = "image", "logits"
PARITY_BATCH_SIZES = (1, 3)


class ParityError(RuntimeError):
    """The exported file does not compute what the PyTorch model computes."""


def random_inputs(model: nn.Module, resolution: int | Sequence[int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, getattr(model, "in_chans", 3), *as_hw(resolution), generator=generator)


def max_abs_diff_onnx(model: nn.Module, path: str | Path, resolution: int | Sequence[int],
                      batch_sizes: Sequence[int] = PARITY_BATCH_SIZES) -> float:
    """Largest |ONNX Runtime - PyTorch| over the logits of random inputs at each batch size."""
    run = onnx_runner(path)
    worst = 0.0
    for batch in batch_sizes:
        x = random_inputs(model, resolution, batch, seed=batch)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = run(x).numpy()
        if got.shape != expected.shape:
            raise ParityError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} at batch {batch}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def check_parity(diff: float, tolerance: float, what: str, hint: str = "") -> None:
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"{what} differs from the PyTorch model by up to {diff:.3g} (tolerance {tolerance:g}); the file was "
            f"not written{hint}"
        )


def onnx_metadata(name: str, num_classes: int, preprocessing: Preprocessing, rewritten: bool,
                  class_names: Sequence[str] | None = None) -> dict[str, str]:
    """``metadata_props`` of an exported file: everything needed to feed it and read its output."""
    metadata = {
        "model": name,
        "num_classes": str(num_classes),
        "preprocessing": preprocessing.to_json(),
        "graph": "blocked-layout rewrite, BN folded" if rewritten else "BN folded",
    }
    if class_names:
        metadata["class_names"] = json.dumps(list(class_names))
    return metadata


def export_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int | Sequence[int] = 224,
    *,
    name: str | None = None,
    preprocessing: Preprocessing = IMAGENET,
    class_names: Sequence[str] | None = None,
    rewrite: bool = True,
    equalize_with: torch.Tensor | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Write ``model`` as ONNX (opset :data:`OPSET`, input ``image`` of shape (batch, C, H, W) with a dynamic
    batch axis, output ``logits``) and return the parity check's max abs difference. Raises
    :class:`ParityError` (and writes nothing) above ``tolerance``. ``equalize_with``: calibration images for
    :func:`equalize_for_int8` (for a file that is to be quantized; needs ``rewrite``)."""
    import onnx

    model = model.eval()
    preprocessing = preprocessing.for_resolution(as_hw(resolution)[0])
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
    onnx.helper.set_model_props(
        proto, onnx_metadata(name or type(model).__name__, num_classes, preprocessing, rewrite, class_names)
    )
    with atomic_output(path) as temporary:
        onnx.save(proto, str(temporary))
        diff = max_abs_diff_onnx(model, temporary, resolution)
        check_parity(diff, tolerance, f"the ONNX export of {name or type(model).__name__}",
                     "; try --no-rewrite to rule out the graph rewrite" if rewrite else "")
    return diff


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    resolution: int | Sequence[int] = 224,
    *,
    preprocessing: Preprocessing = IMAGENET,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Write ``model`` BN-folded as a traced TorchScript file (preprocessing in its ``preprocessing.json`` extra
    file) and return the parity check's max abs difference; raises :class:`ParityError` above ``tolerance``."""
    model = model.eval()
    preprocessing = preprocessing.for_resolution(as_hw(resolution)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        traced = torch.jit.trace(fold_batchnorm(model), random_inputs(model, resolution, 2))
        with atomic_output(path) as temporary:
            torch.jit.save(traced, str(temporary), _extra_files={"preprocessing.json": preprocessing.to_json()})
            loaded = torch.jit.load(str(temporary))
            diff = 0.0
            for batch in PARITY_BATCH_SIZES:
                x = random_inputs(model, resolution, batch, seed=batch)
                with torch.inference_mode():
                    diff = max(diff, float((loaded(x) - model(x)).abs().max()))
            check_parity(diff, tolerance, "the TorchScript export")
    return diff
