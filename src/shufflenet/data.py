"""Datasets and their standard transforms: ImageFolder trees, CIFAR-10/100, and the built-in digits.

``build_datasets(name, root)`` returns the training set, the evaluation set and a :class:`DataSpec` with what a
model and its weights need to know (classes, image size, normalisation).
"""
from __future__ import annotations

import hashlib
import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DIGITS_MEAN, DIGITS_STD = (0.3053,) * 3, (0.3236,) * 3  # the 32x32 training images, all channels equal
DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.25, 0  # fixed train/test split of the 1,797 digits


@dataclass(frozen=True)
class DataSpec:
    """What the model and the saved weights need to know about a dataset."""

    name: str
    num_classes: int
    image_size: int  # training crop; evaluation uses the same size
    resize_size: int  # evaluation resize before the centre crop (= image_size for 32x32 data)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)

    @property
    def small_images(self) -> bool:
        return self.image_size <= 64

    def preprocessing(self) -> Preprocessing:
        """The evaluation transform, as recorded in the weight files trained on this data."""
        return Preprocessing("RGB", 1.0, self.mean, self.std, self.resize_size, self.image_size)


class TensorImages(Dataset):
    """An in-memory uint8 image tensor (N, 3, H, W) with labels and a per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def train_transform(spec: DataSpec) -> v2.Compose:
    """Training augmentation. 32x32 data: pad-4 random crop and horizontal flip (no flip for digits: a mirrored
    digit is another symbol). Larger images, the paper / official recipe: random-resized crop, flip, colour
    jitter 0.4. Both end with the dataset's normalisation."""
    if spec.small_images:
        steps: list[Any] = [v2.RandomCrop(spec.image_size, padding=4)]
        if spec.name != "digits":
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps = [v2.RandomResizedCrop(spec.image_size, antialias=True), v2.RandomHorizontalFlip(),
                 v2.ColorJitter(0.4, 0.4, 0.4)]
    return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


def load_digits_tensors() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 1,797 real handwritten 8x8 digits (values 0-16), upscaled to 32x32 RGB uint8, split 75/25
    (stratified, fixed seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for the CIFAR batch files that can build nothing but numpy arrays and plain containers."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar_batch(path: Path) -> dict[str, Any]:
    try:
        return _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a readable CIFAR batch file ({error}); re-download it") from None


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_cifar_tensors(
    root: str | Path, name: str, train: bool, download: bool = False, check_md5: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, 3, 32, 32) uint8, labels and class names from the CIFAR "python version" files.

    ``root`` holds ``cifar-10-batches-py`` / ``cifar-100-python`` (or is that folder). The files are checked
    against the official MD5 sums; a faithful re-packed copy (the same images in another order, as in
    ../shared/data/cifar10) fails that check and loads with ``check_md5=False`` (CLI ``--no-md5-check``),
    which still checks shapes, counts and labels.
    """
    reference = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root = Path(root)
    folder = root if root.name == reference.base_folder else root / reference.base_folder
    if download and not folder.is_dir():
        reference(str(root), train=train, download=True)  # torchvision's downloader, then our reader
    if not folder.is_dir():
        raise ValueError(f"no {name} data at {folder}; point --data-dir at the folder that contains "
                         f"{reference.base_folder}, or pass --download")
    files = reference.train_list if train else reference.test_list
    images, labels = [], []
    for filename, md5 in files:
        path = folder / filename
        if not path.is_file():
            raise ValueError(f"{name} file {path} is missing; re-download the dataset (--download)")
        if check_md5 and _md5(path) != md5:
            raise ValueError(
                f"{path} differs from the official {name} file (MD5 mismatch). If it is a faithful copy of the "
                f"official images in another order, load it with --no-md5-check (check_md5=False)"
            )
        batch = _read_cifar_batch(path)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"] if "labels" in batch else batch["fine_labels"])
    meta = _read_cifar_batch(folder / reference.meta["filename"])
    class_names = list(meta[reference.meta["key"]])
    stacked, label_tensor = torch.from_numpy(np.concatenate(images)), torch.tensor(labels)
    expected = 50_000 if train else 10_000
    if len(stacked) != expected or len(label_tensor) != expected or not 0 <= int(label_tensor.min()) <= int(
            label_tensor.max()) < len(class_names):
        raise ValueError(f"{folder} does not hold the {expected} labelled {name} images expected; re-download it")
    return stacked, label_tensor, class_names


class CheckedImageFolder(datasets.ImageFolder):
    """ImageFolder that skips an unreadable image (returning ``None``, with a warning) instead of crashing."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[index]
        try:
            image = self.loader(path)
        except Exception as error:  # PIL raises several types for broken files
            log.warning("skipping unreadable image %s (%s)", path, error)
            return None
        return (self.transform(image) if self.transform else image), label


def _image_folder(root: Path, split: str) -> CheckedImageFolder:
    folder = root / split
    if not folder.is_dir():
        raise ValueError(f"no {split}/ folder in {root}; an ImageFolder dataset needs {root}/train/<class>/*.jpg "
                         f"and {root}/val/<class>/*.jpg")
    try:
        return CheckedImageFolder(str(folder))
    except FileNotFoundError as error:  # raised for an empty tree or a class folder without images
        raise ValueError(f"{folder}: {error}; every class folder needs at least one image") from None


def collate_skipping_unreadable(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Default collation of the readable samples; also returns how many were skipped."""
    readable = [sample for sample in batch if sample is not None]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    images, labels = torch.utils.data.default_collate(readable)
    return images, labels, len(batch) - len(readable)


def build_datasets(
    name: str,
    root: str | None = None,
    download: bool = False,
    check_md5: bool = True,
    eval_preprocessing: Preprocessing | None = None,
) -> tuple[Dataset, Dataset, DataSpec]:
    """``name`` is ``digits`` (built in), ``cifar10`` / ``cifar100`` (files under ``root``) or ``imagefolder``
    (``root`` has ``train/`` and ``val/``). Returns (training set, evaluation set, spec). The evaluation set uses
    ``eval_preprocessing`` (that of the weights being evaluated) or else the dataset's own."""
    if name == "digits":
        spec = DataSpec("digits", 10, 32, 32, DIGITS_MEAN, DIGITS_STD, [str(d) for d in range(10)])
        (train_x, train_y), (test_x, test_y) = load_digits_tensors()
    elif name in ("cifar10", "cifar100"):
        if root is None:
            raise ValueError(f"{name} needs --data-dir (the folder holding the CIFAR python files)")
        train_x, train_y, classes = load_cifar_tensors(root, name, True, download, check_md5)
        test_x, test_y, _ = load_cifar_tensors(root, name, False, download, check_md5)
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
        spec = DataSpec(name, len(classes), 32, 32, mean, std, classes)
    elif name == "imagefolder":
        if root is None or not Path(root).is_dir():
            raise ValueError(f"imagefolder needs --data-dir pointing at an existing folder, got {root!r}")
        train = _image_folder(Path(root), "train")
        val = _image_folder(Path(root), "val")
        if train.classes != val.classes:
            raise ValueError(f"train/ and val/ in {root} have different class folders")
        spec = DataSpec("imagefolder", len(train.classes), 224, 256, IMAGENET_MEAN, IMAGENET_STD, train.classes)
        train.transform = train_transform(spec)
        val.transform = (eval_preprocessing or spec.preprocessing()).transform()
        return train, val, spec
    else:
        raise ValueError(f"unknown dataset {name!r}; use digits, cifar10, cifar100 or imagefolder")
    return (TensorImages(train_x, train_y, train_transform(spec)),
            TensorImages(test_x, test_y, (eval_preprocessing or spec.preprocessing()).transform()), spec)
