"""Boxes, classes and scores of a detector on image files, printed and drawn into PNG files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.images import read_image
from ..io.atomic import atomic_output

BOX_COLOUR = (255, 32, 32)


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the original image
    name: str
    score: float


@torch.no_grad()
def detect(detector: torch.nn.Module, image: Image.Image, score_threshold: float) -> list[Detection]:
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    output = detector.eval()([pixels])[0]
    names = detector.class_names
    return [Detection(tuple(round(v, 1) for v in box), names[label - 1], round(score, 4))
            for box, label, score in zip(output["boxes"].tolist(), output["labels"].tolist(),
                                         output["scores"].tolist()) if score >= score_threshold]


def draw(image: Image.Image, found: Sequence[Detection]) -> Image.Image:
    """A copy of ``image`` with each detection's box (3 pixels wide) and its class and score above it."""
    canvas = image.copy()
    pen = ImageDraw.Draw(canvas)
    for detection in found:
        pen.rectangle(detection.box, outline=BOX_COLOUR, width=3)
        x1, y1 = detection.box[:2]
        pen.text((x1 + 4, max(0, y1 - 12)), f"{detection.name} {detection.score:.2f}", fill=BOX_COLOUR)
    return canvas


def predict_images(detector: torch.nn.Module, paths: Sequence[str | Path], output: str | Path,
                   score_threshold: float = 0.5) -> dict[str, list[Detection]]:
    """Detect on each image and write ``output/<name>.png`` with the boxes drawn; returns the detections."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    found = {}
    for path in paths:
        image = read_image(path)
        found[str(path)] = detect(detector, image, score_threshold)
        with atomic_output(output / f"{Path(path).stem}.png") as temporary:
            draw(image, found[str(path)]).save(temporary, format="PNG")
    return found
