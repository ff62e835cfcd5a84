import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from shufflenet import create_model, profile


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker computes on its share of the cores, so
    that the workers do not oversubscribe them."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def count(name: str, resolution: int = 224, **kwargs):
    """Profile a registered model built on the meta device (no computation)."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return profile(model, resolution)


# Official network.py stage_out_channels [stem, stage2, stage3, stage4].
OFFICIAL_WIDTHS = {
    (3, 0.5): (12, 120, 240, 480), (3, 1.0): (24, 240, 480, 960),
    (3, 1.5): (24, 360, 720, 1440), (3, 2.0): (48, 480, 960, 1920),
    (8, 0.5): (16, 192, 384, 768), (8, 1.0): (24, 384, 768, 1536),
    (8, 1.5): (24, 576, 1152, 2304), (8, 2.0): (48, 768, 1536, 3072),
}


@pytest.fixture
def few_cifar_images(monkeypatch):
    """CIFAR read in this process keeps only its first 1,000 training and 500 test images (the reader still
    checks the files' full counts): a grid test's evaluations then cost a twentieth of the full test split."""
    from shufflenet.data import sources

    real = sources.load_cifar

    def first_images(root, name, train, *args):
        images, labels, classes = real(root, name, train, *args)
        keep = 1000 if train else 500
        return images[:keep], labels[:keep], classes

    monkeypatch.setattr(sources, "load_cifar", first_images)


def write_fake_cifar(root: Path) -> Path:
    """A CIFAR-10 folder of random images under ``root`` (not the official MD5 sums); returns the folder."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                 "labels": list(rng.integers(0, 10, 10000))}
        batch["labels"] = [int(v) for v in batch["labels"]]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return folder
