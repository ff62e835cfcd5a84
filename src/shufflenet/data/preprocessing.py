"""What a set of weights expects of its input images: recorded in every weight file and ONNX export, and
applied by evaluation, calibration and ``shufflenet predict``."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, RGB, pixels in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("RGB", "BGR")
INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}
CROP_FRACTION = 0.875  # 224 centre crop of a 256 resize: the papers' single-crop evaluation


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize`` (``interpolation``), centre-crop ``crop`` x ``crop``, put the channels
    in ``channel_order``, scale pixels to [0, ``max_pixel_value``], then subtract ``mean`` and divide by ``std``
    (both None: no normalisation)."""

    channel_order: str = "RGB"
    max_pixel_value: float = 1.0
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (no normalisation)")
        if self.mean is not None and not (len(self.mean) == len(self.std) == 3 and min(self.std) > 0):
            raise ValueError(f"mean and std need 3 values each and a positive std, got {self.mean} and {self.std}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop {self.crop} and resize {self.resize}")
        if self.max_pixel_value not in (1.0, 255.0):
            raise ValueError(f"max_pixel_value is 1.0 or 255.0, got {self.max_pixel_value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """The inverse of ``to_dict``; a missing or unknown field raises a ``ValueError`` naming it."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"preprocessing needs exactly the fields {sorted(names)}, got {sorted(data)}")
        values = dict(data)
        for key in ("mean", "std"):
            if values[key] is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def for_resolution(self, resolution: int) -> Preprocessing:
        """The same preprocessing with a ``resolution`` crop (the resize keeps the 256 / 224 ratio)."""
        if resolution == self.crop:
            return self
        return replace(self, crop=resolution, resize=max(resolution, round(resolution / CROP_FRACTION)))

    def transform(self) -> v2.Compose:
        """The evaluation transform: resize the shorter side, centre crop, scale to [0, 1] or [0, 255], reorder to
        BGR if asked, normalise if asked. Takes a PIL image or a (3, H, W) uint8 tensor."""
        steps: list[Any] = [
            v2.ToImage(),
            v2.Resize(self.resize, interpolation=INTERPOLATIONS[self.interpolation], antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=self.max_pixel_value == 1.0),
        ]
        if self.channel_order == "BGR":
            steps.append(v2.Lambda(to_bgr))
        if self.mean is not None:
            steps.append(v2.Normalize(self.mean, self.std))
        return v2.Compose(steps)

    def describe(self) -> str:
        """One line for people, e.g. ``RGB, pixels 0-1, mean (0.485, ...) std (...), resize 256, crop 224``."""
        norm = "no mean/std" if self.mean is None else f"mean {self.mean} std {self.std}"
        return (f"{self.channel_order}, pixels 0-{self.max_pixel_value:g}, {norm}, resize {self.resize} "
                f"({self.interpolation}), crop {self.crop}")


IMAGENET = Preprocessing()  # torchvision's and timm's default evaluation transform


def to_bgr(image: torch.Tensor) -> torch.Tensor:
    return image.flip(-3)

