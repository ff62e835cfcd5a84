"""Top-k classes of image files, from a registered model (optionally with a weights file) or an ONNX export,
fed with the preprocessing recorded beside the weights."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .export import onnx_preprocessing, onnx_runner, read_onnx_metadata
from .preprocessing import load_image
from .quantize import torch_runner
from .inference import load_model


def class_names(num_classes: int, recorded: list[str] | None = None) -> list[str]:
    """The names recorded with the weights; else ImageNet's for 1000 classes (as shipped in torchvision, no
    download); else ``class i``."""
    if recorded:
        return list(recorded)
    if num_classes == 1000:
        from torchvision.models import AlexNet_Weights

        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return [f"class {i}" for i in range(num_classes)]


def predict(model: str, images: Sequence[str | Path], weights: str | Path | None = None,
            top: int = 5) -> list[list[tuple[str, float]]]:
    """For each image, its ``top`` classes as ``(name, probability)``, most likely first. ``model`` is a registered
    name or a path to a ``.onnx`` file (whose metadata gives the preprocessing)."""
    if not images:
        raise ValueError("give at least one image file")
    if str(model).endswith(".onnx"):
        if weights is not None:
            raise ValueError("an ONNX file carries its own weights; drop --weights")
        if not Path(model).is_file():
            raise ValueError(f"ONNX file {model} does not exist")
        preprocessing = onnx_preprocessing(model)
        recorded = read_onnx_metadata(model).get("class_names")
        recorded_names = json.loads(recorded) if recorded else None
        run = onnx_runner(model)
    else:
        network, preprocessing = load_model(model, weights)
        recorded_names = getattr(network, "class_names", None)
        run = torch_runner(network)
    batch = torch.stack([load_image(path, preprocessing) for path in images])
    probabilities = run(batch).softmax(1)
    names = class_names(probabilities.shape[1], recorded_names)
    values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    return [[(names[i], float(v)) for v, i in zip(row_values, row_indices)]
            for row_values, row_indices in zip(values.tolist(), indices.tolist())]
