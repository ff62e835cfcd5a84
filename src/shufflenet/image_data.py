"""Images for calibration and evaluation: a folder of image files, or CIFAR-10's python batches.

CIFAR-10 batches are pickles. They are read by :func:`read_cifar10_batch` with an unpickler that can build
nothing but numpy arrays, lists, dicts and strings, so a tampered file cannot run code.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .preprocessing import Preprocessing, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
# batches.meta's label_names, in label order (CIFAR-10, Krizhevsky 2009).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: (N, 32, 32, 3) uint8 RGB images and (N,) int64 labels.

    The file is a protocol-2 pickle of a dict whose ``data`` is a numpy array. The unpickler below resolves
    only the globals such a file needs (numpy's array reconstructor, ``ndarray`` and ``dtype``, and
    ``_codecs.encode``, which Python 3 writers use for raw bytes) and refuses every other, so no code from
    the file can run. ``latin1`` decodes its Python 2 strings and the
    array bytes, as numpy documents for Python 2 pickles.
    """
    array_reconstructor, array_class, array_dtype = np.ndarray.__reduce__(np.zeros(1))[0], np.ndarray, np.dtype
    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): array_reconstructor,
        ("numpy._core.multiarray", "_reconstruct"): array_reconstructor,
        ("numpy", "ndarray"): array_class,
        ("numpy", "dtype"): array_dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    class ArraysOnlyUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name} (not a CIFAR-10 batch)")
            return allowed[(module, name)]

    try:
        with open(path, "rb") as handle:
            batch = ArraysOnlyUnpickler(handle, encoding="latin1").load()
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable CIFAR-10 python batch: {error}") from None
    if len(images) != len(labels):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


def cifar10_directory(root: str | Path) -> Path | None:
    """The ``cifar-10-batches-py`` folder at or under ``root``, or ``None``."""
    root = Path(root)
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file():
            return candidate
    return None


def read_cifar10(root: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a CIFAR-10 split ("train" or "test") from the python batches under ``root``."""
    folder = cifar10_directory(root)
    if folder is None:
        raise ValueError(f"no CIFAR-10 python batches (test_batch) in {root} or {Path(root) / 'cifar-10-batches-py'}")
    parts = [read_cifar10_batch(folder / name) for name in CIFAR10_BATCHES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def list_images(directory: str | Path) -> list[Path]:
    """Image files under ``directory`` (recursively), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image directory {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return files


def image_batches(source: str | Path, preprocessing: Preprocessing, limit: int | None = None,
                  batch_size: int = 32, split: str = "test") -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Preprocessed ``(images, labels)`` batches from a CIFAR-10 root (labelled, the ``split`` part) or a folder
    of images (labelled by sub-folder name in sorted order when every image sits in a class sub-folder, else
    ``labels`` is ``None``). At most ``limit`` images, taken evenly across the set."""
    folder = cifar10_directory(source)
    if folder is not None:
        images, labels = read_cifar10(folder, split)
        pick = np.linspace(0, len(images) - 1, limit).round().astype(int) if limit and limit < len(images) else None
        if pick is not None:
            images, labels = images[pick], labels[pick]
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            yield (torch.stack([preprocessing(image) for image in chunk]),
                   torch.from_numpy(labels[start:start + batch_size]))
        return
    files = list_images(source)
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    class_dirs = sorted({f.parent for f in files})
    labelled = all(f.parent != Path(source) for f in files) and len(class_dirs) > 1
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images = torch.stack([load_image(f, preprocessing) for f in chunk])
        labels = torch.tensor([class_dirs.index(f.parent) for f in chunk]) if labelled else None
        yield images, labels
