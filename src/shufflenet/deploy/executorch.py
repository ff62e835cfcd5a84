"""On-device export: an ExecuTorch program (.pte) lowered to XNNPACK, fp32 or int8, checked before it is written.

The model is BN-folded, then export-time rewrites of a copy make the whole graph one XNNPACK delegate (the
model itself is unchanged; :func:`deployable`):

- each ShuffleNet unit is rewritten as for ONNX Runtime, without the channel padding (its shuffle moves after
  the depthwise conv, which acts per channel, so in stride-2 units it moves 4x fewer values);
- every 3x3 average pool that counts its zero padding (ShuffleNet's stride-2 shortcut, Fig. 2c) becomes the
  identical depthwise convolution with weights 1/9 (:func:`~.blocked_layout.average_pool_as_conv`): XNNPACK
  takes no average pool with padding counted, and without the rewrite each one runs on ExecuTorch's
  portable kernels between delegated parts; an adaptive average pool becomes the fixed pool it is at the
  program's input size (XNNPACK takes no adaptive pool; AlexNet's is the identity at 224x224);
- every channel shuffle lowers as view -> one permute -> view (:class:`PermuteShuffle`), without the copy
  that ``torch.channel_shuffle``'s decomposition puts after the permute.

``torch.export`` at batch 1 (one image per call, as on a phone), then ``to_edge_transform_and_lower`` with the
``XnnpackPartitioner``. Every operator outside the delegate is named and fails the export unless
``allow_portable``. int8: the PT2E flow (``prepare_pt2e`` / ``convert_pt2e``) with the XNNPACK quantizer,
int8 activations per tensor and int8 weights per output channel, calibrated on the images given (one at a
time), ShuffleNets channel-equalized on them first as for ONNX (``equalization``). Parity: the program
runs in ExecuTorch's runtime on random inputs and must match the PyTorch model (fp32, the export tolerance) or
the quantized module it was lowered from (int8, :data:`INT8_PARITY_TOLERANCE`) before the file is written.
The model record (name, class count, preprocessing, class names) travels inside the program as the constant
method ``shufflenet_record`` (``io.pte_file``).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..io.atomic import atomic_output, check_writable
from ..io.pte_file import RECORD_METHOD, encode_record, pte_runner
from ..models.complexity import as_hw
from ..models.layers import ChannelShuffle
from .blocked_layout import BlockedShuffleUnit, ChannelGather, average_pool_as_conv, rewrite_for_blocked_layout
from .equalization import equalize_for_int8
from .export import PARITY_TOLERANCE, check_on_random_inputs, export_metadata, random_inputs

# int8 .pte against the converted PT2E module (quantize/dequantize simulated in float): XNNPACK requantizes
# with its own rounding, so a few outputs move by a quantization step of the logits.
INT8_PARITY_TOLERANCE = 0.05
DELEGATE = "executorch_call_delegate"


class OneAtATime(nn.Module):
    """``module`` (exported at batch 1) applied to a batch image by image, as the .pte runner applies the
    program."""

    def __init__(self, module: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.module, self.in_chans = module, in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.module(image[None]) for image in x])


class PortableOperatorError(ValueError):
    """Operators were left outside XNNPACK (and the file was not written)."""


@dataclass
class Delegation:
    """What the XNNPACK delegates took (operator -> count, over ``delegates`` delegated parts) and what was
    left to ExecuTorch's portable kernels."""

    delegates: int
    delegated: Counter = field(default_factory=Counter)
    portable: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(self.delegated.items()))
        text = f"XNNPACK took {sum(self.delegated.values())} operators in {self.delegates} delegate(s): {ops}"
        if self.portable:
            text += "; left to portable kernels: " + ", ".join(f"{n} x{c}" for n, c in sorted(self.portable.items()))
        return text


@dataclass
class ExecutorchExport:
    """The result of :func:`export_executorch`: the parity check's max abs difference, the delegation, and
    with ``evaluation`` the scores of "fp32" (PyTorch) and "int8" (the .pte)."""

    parity: float
    delegation: Delegation
    scores: dict[str, dict[str, float]] | None = None


def operator_name(node: torch.fx.Node) -> str:
    """``aten.convolution`` for an edge operator, the function name otherwise."""
    target = node.target
    name = getattr(target, "__name__", str(target))
    schema = getattr(target, "_schema", None)
    if schema is not None:
        name = schema.name.replace("::", ".")
    return name


def fixed_average_pool(pool: nn.Module, shape: torch.Size) -> nn.Module:
    """What an average pool computes on inputs of ``shape`` (N, C, H, W), in a form XNNPACK takes: a pool that
    counts its padding as the depthwise conv of :func:`average_pool_as_conv`; an adaptive pool whose output
    size divides the input as the plain pool of that window (the identity when they are equal: AlexNet's 6x6
    pool at 224x224); anything else as it is (a global adaptive pool lowers as a mean, which XNNPACK takes)."""
    if isinstance(pool, nn.AvgPool2d):
        return average_pool_as_conv(pool, shape[1])
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = nn.modules.utils._pair(pool.output_size)
        out = [side if want is None else want for side, want in zip(shape[-2:], size)]
        if out != [1, 1] and all(side % want == 0 for side, want in zip(shape[-2:], out)):
            kernel = tuple(side // want for side, want in zip(shape[-2:], out))
            return nn.Identity() if kernel == (1, 1) else nn.AvgPool2d(kernel, kernel)
    return pool


def rewrite_average_pools(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Replace, in place, every average pool by :func:`fixed_average_pool` at the input shape it sees in one
    forward pass on ``example`` (the program's fixed input); returns ``model``."""
    shapes: dict[nn.Module, torch.Size] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        shapes[module] = inputs[0].shape

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child in shapes:
                setattr(parent, name, fixed_average_pool(child, shapes[child]))
    return model


class PermuteShuffle(nn.Module):
    """The channel shuffle of a :class:`~shufflenet.models.layers.ChannelShuffle` as view -> ``permute_copy`` ->
    view: the permute returns a contiguous tensor, so nothing else copies (``torch.channel_shuffle`` and
    view-transpose-reshape both lower with a clone after the permute)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        grouped = x.view(n, self.groups, c // self.groups, h, w)
        return torch.permute_copy(grouped, (0, 2, 1, 3, 4)).view(n, c, h, w)


def deployable(model: nn.Module, example: torch.Tensor, equalize_with: torch.Tensor | None = None) -> nn.Module:
    """The module that is exported: an eval-mode, BN-folded copy of ``model`` computing the same function, with
    every ShuffleNet unit rewritten as for ONNX without padding (:func:`rewrite_for_blocked_layout` with block 1:
    its shuffle after the depthwise conv, on 4x fewer pixels in stride-2 units, its shortcut pool a depthwise
    conv), optionally channel-equalized on the images ``equalize_with`` (:func:`equalize_for_int8`), every
    other average pool in a form XNNPACK takes (:func:`fixed_average_pool`), and every shuffle a
    :class:`PermuteShuffle`."""
    prepared = rewrite_for_blocked_layout(model, block=1)
    if equalize_with is not None:
        equalize_for_int8(prepared, equalize_with)
    rewrite_average_pools(prepared, example)
    for parent in list(prepared.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelShuffle):
                setattr(parent, name, PermuteShuffle(child.groups))
            elif isinstance(child, ChannelGather) and child.shuffle_groups:
                setattr(parent, name, PermuteShuffle(child.shuffle_groups))
    return prepared.eval()


def delegation_of(edge_program: Any) -> Delegation:
    """What the lowered edge program delegates to XNNPACK and what it leaves outside."""
    graph_module = edge_program.exported_program().graph_module
    delegation = Delegation(0)
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or operator_name(node) == "getitem":
            continue
        if operator_name(node) == DELEGATE:
            delegation.delegates += 1
            lowered = getattr(graph_module, node.args[0].target)
            delegation.delegated.update(operator_name(inner) for inner in lowered.original_module.graph.nodes
                                        if inner.op == "call_function" and operator_name(inner) != "getitem")
        else:
            delegation.portable[operator_name(node)] += 1
    return delegation


def lower_to_xnnpack(module: nn.Module, example: torch.Tensor, record: dict[str, str],
                     allow_portable: bool = False) -> tuple[bytes, Delegation]:
    """``module`` through ``torch.export`` at ``example``'s shape and lowered to XNNPACK, with ``record`` as
    the program's :data:`RECORD_METHOD`; raises :class:`PortableOperatorError` when an operator is left outside
    XNNPACK unless ``allow_portable``. Returns the program's bytes and the delegation."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # export's and the partitioner's notices
        exported = torch.export.export(module, (example,))
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           constant_methods={RECORD_METHOD: encode_record(record)})
        delegation = delegation_of(edge)
        if delegation.portable and not allow_portable:
            left = ", ".join(f"{name} x{count}" for name, count in sorted(delegation.portable.items()))
            raise PortableOperatorError(f"XNNPACK does not take {left}; the file was not written (pass "
                                        f"--allow-portable to run them on ExecuTorch's portable kernels)")
        return edge.to_executorch().buffer, delegation


def quantize_pt2e(module: nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> nn.Module:
    """The PT2E int8 version of ``module`` for XNNPACK: int8 activations per tensor (affine), int8 weights
    symmetric per output channel, ranges observed on ``calibration`` (N, C, H, W), one image at a time;
    quantize/dequantize simulated in float."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
        with torch.no_grad():
            for image in calibration:
                prepared(image[None])
        return convert_pt2e(prepared)


def export_executorch(
    model: nn.Module,
    path: str | Path,
    resolution: int | Sequence[int] | None = None,
    *,
    calibration: torch.Tensor | None = None,
    evaluation: Iterable[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    allow_portable: bool = False,
    equalize: bool = True,
    tolerance: float | None = None,
) -> ExecutorchExport:
    """Write ``model`` as an ExecuTorch program lowered to XNNPACK (fp32, or int8 when ``calibration`` images are
    given) at ``path``, input ``(1, C, H, W)`` at ``resolution`` (default the record's crop). Checks parity first
    (fp32 against ``model``, int8 against its quantized module; ``tolerance`` defaults to
    :data:`~.export.PARITY_TOLERANCE` and :data:`INT8_PARITY_TOLERANCE`) and, given ``evaluation`` batches, scores
    ``model`` ("fp32") and the int8 program ("int8") with ``engine.evaluate``. int8 ShuffleNets are
    channel-equalized on ``calibration`` first unless ``equalize`` is False (:func:`deployable`). ``path`` is
    written only when every step has succeeded; raises :class:`~.export.ParityError` or
    :class:`PortableOperatorError` otherwise."""
    check_writable(path)
    int8 = calibration is not None
    if evaluation is not None and not int8:
        raise ValueError("the evaluation compares int8 with fp32; give calibration images (--int8 --calib DIR)")
    model = model.eval()
    resolution = resolution or model.record.preprocessing.crop
    example = random_inputs(model, resolution, 1)
    module = deployable(model, example, calibration if int8 and equalize else None)
    equalized = int8 and equalize and any(isinstance(m, BlockedShuffleUnit) for m in module.modules())
    quantized = quantize_pt2e(module, example, calibration) if int8 else None
    graph = ("XNNPACK, BN folded, shuffles as one permute after the depthwise conv, average pools as depthwise "
             "convs" + (", channel-equalized" if equalized else "") + (", int8 PT2E per-channel" if int8 else ""))
    with torch.no_grad():
        num_classes = int(model(example).shape[-1])
    record = export_metadata(model, num_classes, as_hw(resolution)[0], graph)
    program, delegation = lower_to_xnnpack(quantized if int8 else module, example, record, allow_portable)
    if tolerance is None:
        tolerance = INT8_PARITY_TOLERANCE if int8 else PARITY_TOLERANCE
    what = f"the ExecuTorch {'int8 ' if int8 else ''}export of {record['model']}"
    with tempfile.TemporaryDirectory() as scratch:
        written = Path(scratch) / "model.pte"
        written.write_bytes(program)
        run = pte_runner(written)
        reference = OneAtATime(quantized, model.record.in_chans) if int8 else model
        parity = check_on_random_inputs(reference, run, resolution, what, tolerance)
        scores = None
        if evaluation is not None:
            from ..engine.evaluate import evaluate
            from ..factory import model_runner

            scores = evaluate({"fp32": model_runner(model), "int8": run}, evaluation)
    with atomic_output(path) as temporary:
        temporary.write_bytes(program)
    return ExecutorchExport(parity, delegation, scores)

