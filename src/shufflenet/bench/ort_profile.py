"""Where the time goes in ONNX Runtime: per-operator kernel time of an ONNX model, grouped by kind.

Uses ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) on the graph as ONNX Runtime rewrote it
(the optimised model is saved beside the trace so that each timed node's weights and attributes are known).
Convolutions are grouped as stem / pointwise dense / pointwise grouped / depthwise, with their multiply-adds
and the rate they ran at; other operators by type (the layout conversions ``ReorderInput`` /
``ReorderOutput`` that the NCHWc optimiser inserts show up under those names).
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

CONV_OPS = ("Conv", "FusedConv", "QLinearConv")


def conv_kind(weight_dims: list[int], groups: int) -> str:
    out_channels, in_per_group, kernel_h, kernel_w = weight_dims
    if in_per_group == 1 and groups > 1:
        return "depthwise conv"
    if kernel_h * kernel_w > 1:
        return f"{kernel_h}x{kernel_w} conv"
    return "pointwise conv, grouped" if groups > 1 else "pointwise conv, dense"


def profile_onnx(path: str | Path, input_shape: tuple[int, ...], runs: int = 30,
                 threads: int = 1) -> list[dict[str, Any]]:
    """Mean kernel time per run of each kind of operator, largest first: ``kind``, ``nodes``, ``us``, ``share``
    (of the summed kernel time) and, for convolutions, ``mmacs`` and ``gmacs_per_s``."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "trace")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(input_shape, np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        graph = onnx.load(options.optimized_model_filepath).graph
    node_us: dict[str, float] = defaultdict(float)
    output_shape: dict[str, list[int]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            node_us[name] += event["dur"] / runs
            shapes = event["args"].get("output_type_shape") or [{}]
            output_shape[name] = next(iter(shapes[0].values()), [])
    weights = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"nodes": 0, "us": 0.0, "macs": 0.0})
    for node in graph.node:
        if node.name not in node_us:
            continue
        kind, macs = node.op_type, 0.0
        weight = node.input[3 if node.op_type == "QLinearConv" else 1] if node.op_type in CONV_OPS else None
        if weight in weights and len(weights[weight]) == 4:
            attributes = {a.name: a for a in node.attribute}
            groups = attributes["group"].i if "group" in attributes else 1
            channels_last = "channels_last" in attributes and attributes["channels_last"].i == 1
            dims = output_shape[node.name]
            pixels = dims[1] * dims[2] if channels_last else dims[-2] * dims[-1]
            if len(dims) == 5:  # NCHWc: (N, C / block, H, W, block)
                pixels = dims[2] * dims[3]
            kind = conv_kind(weights[weight], groups)
            macs = float(np.prod(weights[weight])) * pixels
        kinds[kind]["nodes"] += 1
        kinds[kind]["us"] += node_us[node.name]
        kinds[kind]["macs"] += macs
    total = sum(k["us"] for k in kinds.values())
    rows = []
    for kind, k in sorted(kinds.items(), key=lambda item: -item[1]["us"]):
        row = {"kind": kind, "nodes": int(k["nodes"]), "us": k["us"], "share": k["us"] / total}
        if k["macs"]:
            row.update(mmacs=k["macs"] / 1e6, gmacs_per_s=k["macs"] / k["us"] / 1e3)
        rows.append(row)
    return rows
