"""CIFAR-10 / CIFAR-100 from torchvision's on-disk "python version" files, read by an unpickler that can build
nothing but numpy arrays (the batch files are pickles)."""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets


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


def load_cifar(
    root: str | Path, name: str, train: bool, download: bool = False, check_md5: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, 3, 32, 32) uint8, labels and class names of one split (only its files are read) from the
    CIFAR "python version" files.

    ``root`` holds ``cifar-10-batches-py`` / ``cifar-100-python`` (or is that folder). The files are checked
    against the official MD5 sums; a faithful re-packed copy (the same images in another order, as in
    ../shared/data/cifar10) fails that check and loads with ``check_md5=False`` (CLI ``--no-md5-check``),
    which still checks shapes, counts and labels.
    """
    reference = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root = Path(root)
    folder = root if root.name == reference.base_folder else root / reference.base_folder
    if download and not folder.is_dir():
        try:  # torchvision's downloader, then our reader
            reference(str(root), train=train, download=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise ValueError(f"cannot download {name} into {root} ({error}); on a machine without a network, "
                             f"copy the {reference.base_folder} folder there and drop --download") from None
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
