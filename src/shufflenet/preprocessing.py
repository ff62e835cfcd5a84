"""What a model expects of its input image: channel order, pixel scale, mean/std, resize and centre crop.

The weights file (issue 3) records this as metadata; ONNX exports carry it in ``metadata_props`` so that a
deployed file alone says how to feed it. Without a record we assume torchvision's ImageNet convention.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

# torchvision's ImageNet statistics of RGB pixels scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # 224 centre crop of a 256 resize, the papers' single-crop evaluation


@dataclass(frozen=True)
class Preprocessing:
    """``pixel_range``: pixels are scaled to [0, pixel_range] (1.0 for torchvision, 255.0 for the official
    ShuffleNet weights, which take raw BGR 0-255). Then ``(pixel - mean) / std`` per channel, in
    ``channel_order``. ``resize`` is the shorter side before the ``crop`` x ``crop`` centre crop."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pixel_range: float = 1.0
    channel_order: str = "RGB"
    resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={self.mean}, std={self.std}")
        if self.pixel_range not in (1.0, 255.0):
            raise ValueError(f"pixel_range must be 1.0 or 255.0, got {self.pixel_range}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Preprocessing":
        """From a recorded dict (missing keys take the ImageNet defaults); ``None`` gives the defaults."""
        if data is None:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @classmethod
    def for_resolution(cls, resolution: int, data: Mapping[str, Any] | None = None) -> "Preprocessing":
        """The recorded preprocessing with its crop set to ``resolution`` (resize keeps the 0.875 ratio)."""
        base = cls.from_dict(data)
        if base.crop == resolution:
            return base
        return cls(**{**asdict(base), "crop": resolution, "resize": max(resolution, round(resolution / CROP_FRACTION))})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def normalize(self, rgb: np.ndarray) -> torch.Tensor:
        """An (H, W, 3) uint8 RGB array -> a (3, H, W) float tensor as the model expects it."""
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() * (self.pixel_range / 255.0)
        if self.channel_order == "BGR":
            pixels = pixels.flip(0)  # mean and std are recorded in the model's own channel order
        return (pixels - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Shorter side to ``resize`` (bilinear), then the centre ``crop`` x ``crop``."""
        image = image.convert("RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        if scale != 1:
            image = image.resize((max(self.crop, round(width * scale)), max(self.crop, round(height * scale))),
                                 Image.BILINEAR)
        width, height = image.size
        left, top = (width - self.crop) // 2, (height - self.crop) // 2
        return image.crop((left, top, left + self.crop, top + self.crop))

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """A PIL image or an (H, W, 3) uint8 RGB array -> the model's (3, crop, crop) input."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        return self.normalize(np.asarray(self.resize_and_crop(image)))


def load_image(path: str | Path, preprocessing: Preprocessing) -> torch.Tensor:
    """Read an image file and preprocess it; a missing or unreadable file raises a clear ``ValueError``."""
    try:
        with Image.open(path) as image:
            return preprocessing(image)
    except (OSError, Image.UnidentifiedImageError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
