"""Preprocessed image batches for calibration and quick accuracy checks: a CIFAR-10 root, or a folder of images
(labelled by sub-folder when every image sits in one)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .data import load_cifar_tensors
from .preprocessing import Preprocessing, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def is_cifar10_root(path: str | Path) -> bool:
    path = Path(path)
    return any((folder / "test_batch").is_file() for folder in (path, path / "cifar-10-batches-py"))


def list_images(directory: str | Path) -> list[Path]:
    """Image files under ``directory`` (recursively), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image directory {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return files


def evenly(count: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` indices spread evenly over ``range(count)``."""
    if not limit or limit >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(int)


def image_batches(source: str | Path, preprocessing: Preprocessing, limit: int | None = None,
                  batch_size: int = 32, split: str = "test") -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Preprocessed ``(images, labels)`` batches from a CIFAR-10 root (its ``split``, labelled) or a folder of
    images (``labels`` None unless every image sits in a class sub-folder). At most ``limit`` images, taken
    evenly across the set. CIFAR files are checked for structure, not MD5 (a faithful re-ordered copy serves
    as well for calibration)."""
    transform = preprocessing.transform()
    if is_cifar10_root(source):
        images, labels, _ = load_cifar_tensors(source, "cifar10", train=split == "train", check_md5=False)
        pick = torch.from_numpy(evenly(len(images), limit))
        images, labels = images[pick], labels[pick]
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            yield torch.stack([transform(image) for image in chunk]), labels[start:start + batch_size]
        return
    files = list_images(source)
    files = [files[i] for i in evenly(len(files), limit)]
    class_dirs = sorted({f.parent for f in files})
    labelled = all(f.parent != Path(source) for f in files) and len(class_dirs) > 1
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images = torch.stack([load_image(f, preprocessing) for f in chunk])
        yield images, torch.tensor([class_dirs.index(f.parent) for f in chunk]) if labelled else None
