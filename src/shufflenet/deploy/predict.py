"""Top-k classes of image files, from any model ``shufflenet.load`` takes (a name with weights, a weight file,
an ONNX export, an ExecuTorch program), fed with the preprocessing recorded beside the weights."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..data.images import read_image
from ..factory import LoadedModel


def predict(loaded: LoadedModel, images: Sequence[str | Path], top: int = 5) -> list[list[tuple[str, float]]]:
    """For each image, its ``top`` classes as ``(name, probability)``, most likely first."""
    if not images:
        raise ValueError("give at least one image file")
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    transform = loaded.preprocessing.transform()
    batch = torch.stack([transform(read_image(path)) for path in images])
    probabilities = loaded.run(batch).softmax(1)
    values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    return [[(loaded.class_names[i], float(v)) for v, i in zip(row_values, row_indices)]
            for row_values, row_indices in zip(values.tolist(), indices.tolist())]
