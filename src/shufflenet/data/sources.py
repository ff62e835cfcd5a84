"""One way to open image data, for training, evaluation, calibration and int8 scoring.

Named data sets (``open_dataset``): ``digits`` (built in), ``cifar10`` / ``cifar100`` (files under ``root``)
and ``imagefolder`` (``root/train/<class>/*`` and ``root/val/<class>/*``); each opens one split only, so
evaluating never reads the training images. A folder given for calibration or scoring (``open_folder``) is
recognised by its layout: a CIFAR-10 root, a train/ + val/ tree (the split is chosen), a class-per-folder
tree (labelled) or a flat folder of images (unlabelled). Every source gives ``(image, label)`` samples
(label -1 when unlabelled; ``None`` for an image that cannot be read, which the batching skips and counts).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .cifar import load_cifar
from .digits import DIGITS_MEAN, DIGITS_STD, load_digits
from .images import IMAGE_SUFFIXES, list_images, read_image
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
SPLITS = ("train", "test")  # "test" is the evaluation split: CIFAR's test batch, digits' 25%, imagefolder's val/
CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
UNLABELLED = -1


@dataclass(frozen=True)
class DataSpec:
    """What a model and the weights trained on a data set need to know about it."""

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

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch through the transform at once (torchvision v2 transforms take batches)."""
        images = self.images[indices]
        images = self.transform(images) if self.transform else images
        return list(zip(images.unbind(0), self.labels[indices].tolist()))


class ImageFiles(Dataset):
    """Image files with labels (``UNLABELLED`` for none); an unreadable file gives ``None`` and a warning."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable | None = None) -> None:
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        try:
            image = read_image(self.paths[index])
        except ValueError as error:
            warn_skipped(str(error))
            return None
        return (self.transform(image) if self.transform else image), self.labels[index]


def warn_skipped(message: str) -> None:
    """Report a skipped image on its own line, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: skipping an unreadable image: {message}")
    log.debug("skipped %s", message)


def class_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold images directly, sorted (a class-per-folder tree's classes)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and any(
        f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir() if f.is_file()))


def labelled_folder(root: Path, transform: Callable | None,
                    class_names: Sequence[str] | None = None) -> tuple[ImageFiles, list[str]]:
    """A class-per-folder tree. Labels follow ``class_names`` (a model's) when given, else the sorted folders."""
    folders = class_folders(root)
    if not folders:
        raise ValueError(f"no class folders with images in {root}; expected {root}/<class>/*.jpg")
    names = [folder.name for folder in folders]
    order = list(class_names) if class_names else names
    unknown = sorted(set(names) - set(order))
    if unknown:
        raise ValueError(f"{root} has class folders {unknown} that the model does not know; its classes are "
                         f"{order[:10]}{' ...' if len(order) > 10 else ''}")
    paths = [path for folder in folders for path in list_images(folder, recursive=False)]
    labels = [order.index(path.parent.name) for path in paths]
    return ImageFiles(paths, labels, transform), order


def data_spec(name: str, root: str | Path | None = None, class_names: Sequence[str] | None = None) -> DataSpec:
    """The spec of a named data set (``class_names``: read from the files, for CIFAR and imagefolder)."""
    if name == "digits":
        return DataSpec("digits", 10, 32, 32, DIGITS_MEAN, DIGITS_STD, [str(d) for d in range(10)])
    if name in CIFAR_STATS:
        mean, std = CIFAR_STATS[name]
        return DataSpec(name, len(class_names or ()), 32, 32, mean, std, list(class_names or ()))
    if name == "imagefolder":
        return DataSpec(name, len(class_names or ()), 224, 256, IMAGENET_MEAN, IMAGENET_STD, list(class_names or ()))
    raise ValueError(f"unknown data set {name!r}; use one of {', '.join(DATASETS)}")


def open_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    check_md5: bool = True,
    transform: Callable | None = None,
) -> tuple[Dataset, DataSpec]:
    """One split (``train`` or ``test``) of a named data set, with ``transform`` applied to each image (a uint8
    tensor for digits and CIFAR, a PIL image for imagefolder), and the data set's spec."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; use one of {', '.join(DATASETS)}")
    if name == "digits":
        images, labels = load_digits(split == "train")
        return TensorImages(images, labels, transform), data_spec(name)
    if root is None:
        raise ValueError(f"{name} needs --data-dir (the folder holding the {name} files)")
    if name in CIFAR_STATS:
        images, labels, classes = load_cifar(root, name, split == "train", download, check_md5)
        return TensorImages(images, labels, transform), data_spec(name, class_names=classes)
    folder = Path(root) / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise ValueError(f"no {folder.name}/ folder in {root}; an imagefolder data set needs {root}/train/<class>/"
                         f"*.jpg and {root}/val/<class>/*.jpg")
    train_classes = [p.name for p in class_folders(Path(root) / "train")] if (Path(root) / "train").is_dir() else None
    dataset, classes = labelled_folder(folder, transform, train_classes)
    return dataset, data_spec(name, class_names=classes)


def open_folder(
    path: str | Path,
    split: str,
    transform: Callable | None = None,
    *,
    class_names: Sequence[str] | None = None,
    check_md5: bool = True,
) -> tuple[Dataset, list[str] | None]:
    """Images for calibration or scoring, by the folder's layout: a CIFAR-10 root (its ``split``), a train/ +
    val/ tree (train/ for ``split="train"``, else val/), a class-per-folder tree, or a flat folder (unlabelled).
    Returns the data set and its class names (None when unlabelled)."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of images (or a CIFAR-10 root)")
    if any((folder / "test_batch").is_file() for folder in (root, root / "cifar-10-batches-py")):
        dataset, spec = open_dataset("cifar10", split, root, check_md5=check_md5, transform=transform)
        return dataset, spec.class_names
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / ("train" if split == "train" else "val")
    if class_folders(root):
        return labelled_folder(root, transform, class_names)
    files = list_images(root, recursive=False)
    return ImageFiles(files, [UNLABELLED] * len(files), transform), None


def evenly(count: int, limit: int | None) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(count)``."""
    if not limit or limit >= count:
        return list(range(count))
    return np.linspace(0, count - 1, limit).round().astype(int).tolist()


def collate_readable(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Default collation of the readable samples; also returns how many were skipped."""
    readable = [sample for sample in batch if sample is not None]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    images, labels = torch.utils.data.default_collate(readable)
    return images, labels, len(batch) - len(readable)


def batches(dataset: Dataset, batch_size: int = 256, limit: int | None = None, workers: int = 0,
            indices: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(images, labels)`` batches of the readable samples (labels None when the set is unlabelled), over
    ``indices`` (default all) thinned evenly to at most ``limit``."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    indices = [indices[i] for i in evenly(len(indices), limit)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                        collate_fn=collate_readable)
    for images, labels, _ in loader:
        if len(labels):
            yield images, (None if bool((labels == UNLABELLED).all()) else labels)


def train_transform(spec: DataSpec) -> v2.Compose:
    """Per-image training augmentation for image files, the paper / official recipe: random-resized crop, flip,
    colour jitter 0.4, then the data set's normalisation. (In-memory 32x32 data is augmented in batches:
    ``data.loaders.TensorBatches``.)"""
    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(spec.image_size, antialias=True), v2.RandomHorizontalFlip(),
                       v2.ColorJitter(0.4, 0.4, 0.4), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(spec.mean, spec.std)])
