"""ONNX files: an ONNX Runtime session and a runner (images -> logits), and the metadata our exports record
(model name, class count, class names, preprocessing)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..data.preprocessing import IMAGENET, Preprocessing
from ..errors import first_line

Runner = Callable[[torch.Tensor], torch.Tensor]  # a batch of preprocessed images -> logits


def onnx_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, run sequentially, at graph optimisation
    level ORT_ENABLE_ALL (which includes the NCHWc layout optimiser; docs/deploy.md). A missing, empty or
    corrupt file raises a ``ValueError`` saying so."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path} is {'empty' if path.is_file() else 'not a file'}; give an ONNX file written by "
                         f"`shufflenet export`, or export it again")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the NCHWc "hardware specific" notice is expected
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"{path} is not a readable ONNX model ({first_line(error)}); export it again") from None


def onnx_runner(path: str | Path, threads: int = 1) -> Runner:
    """A function images -> logits running the ONNX file in ONNX Runtime."""
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])

    return run


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX file ({type(error).__name__}); export it again") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def onnx_preprocessing(metadata: dict[str, str]) -> Preprocessing:
    """The preprocessing an export recorded (torchvision's ImageNet one when none was)."""
    recorded = metadata.get("preprocessing")
    return Preprocessing.from_dict(json.loads(recorded)) if recorded else IMAGENET


def onnx_class_names(metadata: dict[str, str]) -> list[str] | None:
    recorded = metadata.get("class_names")
    return json.loads(recorded) if recorded else None
