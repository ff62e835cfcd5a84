"""int8 post-training static quantization with calibration images, by ONNX Runtime or by PyTorch.

ONNX Runtime: ``quantize_static`` in QDQ format, weights int8 per output channel, activations uint8 with
ranges from the calibration images (ONNX Runtime's quantization guide: QDQ + per-channel is its recommended
CNN setting on x86; uint8 activations x int8 weights use its fastest kernels, u8s8). Weights use 7 bits
(``reduce_range``) unless the CPU has VNNI: without VNNI the u8s8 kernels add pairs of products in 16 bits,
which saturates with full-range weights (the guide's "saturation issue"; what it costs here: docs/deploy.md).
For ShuffleNet, export the float model with :func:`equalize_for_int8` first.
PyTorch: FX graph mode with the "x86" backend (fbgemm + oneDNN kernels), the quantizer that ships in
``torch.ao`` (the pt2e flow lives in the separate torchao package).
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from ..data.sources import batches, open_folder
from ..engine.evaluate import evaluate
from ..io.atomic import atomic_output, check_writable
from ..io.onnx_file import onnx_runner
from ..machine import has_vnni
from ..models.layers import set_shuffle_mode
from .export import export_onnx

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_images(source: str | Path, preprocessing: Preprocessing, count: int = 256, *,
                       check_md5: bool = True) -> torch.Tensor:
    """Up to ``count`` preprocessed images spread evenly over the training split of ``source`` (a CIFAR-10
    root, a train/ + val/ tree, a class-per-folder tree or a flat folder; ``data.sources.open_folder``), so that
    scoring on the test split stays unseen."""
    dataset, _ = open_folder(source, "train", preprocessing.transform(), check_md5=check_md5)
    images = [x for x, _ in batches(dataset, limit=count)]
    if not images:
        raise ValueError(f"no readable calibration images in {source}")
    return torch.cat(images)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: torch.Tensor,
                  method: str = "percentile") -> None:
    """Write the int8 (QDQ, per-channel) version of the float ONNX model ``fp32_path`` to ``out_path``,
    calibrated on the preprocessed images ``calibration`` (N, C, H, W), one image per calibration step.
    ``method`` sets the activation ranges: "percentile" (ONNX Runtime's 99.999th percentile, clipping rare
    outliers; the default, as it scored best here: docs/deploy.md), "minmax" (the observed extremes) or
    "entropy" (KL divergence)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")

    class Images(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self.feeds = iter([{input_name: image[None].numpy()} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # shapes + graph cleanup
        with atomic_output(out_path) as temporary, contextlib.redirect_stdout(io.StringIO()):  # calibrator chatter
            quantize_static(
                str(prepared), str(temporary), Images(input_name), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                reduce_range=not has_vnni(),
                calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                  "entropy": CalibrationMethod.Entropy}[method],
            )


def export_int8_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int,
    calibration: torch.Tensor,
    *,
    rewrite: bool = True,
    method: str = "percentile",
    evaluation: Iterable[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
) -> tuple[float, dict[str, dict[str, float]] | None]:
    """The int8 ONNX file of ``model`` at ``path``: the float export (rewritten and channel-equalized on
    ``calibration``, parity-checked, recording ``model.record``) quantized with :func:`quantize_onnx`. Returns
    the float parity check's max abs difference and, given ``evaluation`` batches, :func:`evaluate`'s scores of
    "fp32" and "int8". ``path`` is written only when every step, the evaluation included, has succeeded."""
    check_writable(path)
    with tempfile.TemporaryDirectory() as scratch:
        fp32, int8 = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        diff = export_onnx(model, fp32, resolution, rewrite=rewrite, equalize_with=calibration if rewrite else None)
        quantize_onnx(fp32, int8, calibration, method)
        scores = None if evaluation is None else evaluate({"fp32": onnx_runner(fp32), "int8": onnx_runner(int8)},
                                                          evaluation)
        with atomic_output(path) as temporary:
            shutil.copyfile(int8, temporary)
    return diff, scores


class Classifier(nn.Module):
    """``forward_head(forward_features(x))`` without the input check, which FX cannot trace."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x))


def quantize_torch(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """PyTorch FX int8 (x86 backend) version of ``model`` (one of ours), calibrated on ``calibration``; its channel
    shuffles run natively (``torch.channel_shuffle`` has a quantized kernel)."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    traceable = set_shuffle_mode(copy.deepcopy(model).eval(), "native")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        prepared = prepare_fx(Classifier(traceable), get_default_qconfig_mapping("x86"),
                              example_inputs=(calibration[:1],))
        with torch.inference_mode():
            for image in calibration:
                prepared(image[None])
        return convert_fx(prepared)
