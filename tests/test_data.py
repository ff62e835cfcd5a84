import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shufflenet.data import build_datasets, collate_skipping_unreadable, load_cifar_tensors
from shufflenet.preprocessing import Preprocessing

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def write_image_folder(root: Path, corrupt: bool = False) -> None:
    for split in ("train", "val"):
        for label, colour in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + i, 30), colour).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "cat" / "broken.png").write_bytes(b"not an image at all")


def test_digits_split_and_transforms():
    train, test, spec = build_datasets("digits")
    assert (len(train), len(test), spec.num_classes) == (1347, 450, 10)
    assert len(set(range(10)) - {int(y) for y in test.labels}) == 0  # stratified: every digit in the test set
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    torch.testing.assert_close(test[0][0], test[0][0])  # evaluation is deterministic
    torch.manual_seed(0)
    assert not torch.equal(train[0][0], train[0][0]) or not torch.equal(train[1][0], train[1][0])  # augmented


def test_image_folder_skips_unreadable_images(tmp_path, caplog):
    write_image_folder(tmp_path, corrupt=True)
    train, val, spec = build_datasets("imagefolder", str(tmp_path))
    assert spec.class_names == ["cat", "dog"] and spec.image_size == 224
    with caplog.at_level(logging.WARNING):
        images, labels, skipped = collate_skipping_unreadable([train[i] for i in range(len(train))])
    assert skipped == 1 and len(labels) == 6 and images.shape == (6, 3, 224, 224)
    assert "skipping unreadable image" in caplog.text and "broken.png" in caplog.text
    assert val[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("layout,message", [
    ("missing", "needs --data-dir pointing at an existing folder"),
    ("no-val", "no val/ folder"),
    ("empty-class", "every class folder needs at least one image"),
])
def test_image_folder_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        write_image_folder(root)
    if layout == "no-val":
        for path in sorted((root / "val").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / "val").rmdir()
    if layout == "empty-class":
        (root / "train" / "bird").mkdir()
        (root / "val" / "bird").mkdir()
    with pytest.raises(ValueError, match=message):
        build_datasets("imagefolder", str(root))


def write_fake_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 10000))}
        batch["labels"] = [int(v) for v in batch["labels"]]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return folder


def test_cifar_reader_checks_md5_and_loads_a_faithful_copy_explicitly(tmp_path):
    folder = write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match="MD5 mismatch.*--no-md5-check"):
        load_cifar_tensors(tmp_path, "cifar10", train=True)
    images, labels, classes = load_cifar_tensors(tmp_path, "cifar10", train=False, check_md5=False)
    raw = pickle.loads((folder / "test_batch").read_bytes())
    assert images.shape == (10000, 3, 32, 32) and classes[3] == "c3"
    assert torch.equal(images[5].flatten(), torch.from_numpy(raw["data"][5]))  # R plane, G plane, B plane
    assert labels.tolist() == raw["labels"]


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    folder = write_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(ValueError, match="not a readable CIFAR batch file.*refusing"):
        load_cifar_tensors(tmp_path, "cifar10", train=False, check_md5=False)
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no cifar10 data at .*--data-dir.*--download"):
        build_datasets("cifar10", str(tmp_path))


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="real CIFAR-10 not present at ../shared/data/cifar10")
def test_real_cifar10():
    train, test, spec = build_datasets("cifar10", str(SHARED_CIFAR), check_md5=False)
    assert (len(train), len(test)) == (50000, 10000)
    assert spec.class_names[:3] == ["airplane", "automobile", "bird"]
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    meta = SHARED_CIFAR / "cifar-10-batches-py" / "batches.meta"
    assert hashlib.md5(meta.read_bytes()).hexdigest() == "5ff9c542aee3614f3951f8cda6e48888"


def test_eval_transform_follows_the_weights_preprocessing():
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    image[0] = 255  # pure red
    megvii = Preprocessing("BGR", 255.0, None, None, resize=8, crop=8)
    out = megvii.transform()(image)
    assert out[2].eq(255).all() and out[0].eq(0).all()  # red lands in the last (R of BGR) channel, 0-255
    normalised = Preprocessing("RGB", 1.0, (0.5,) * 3, (0.25,) * 3, resize=8, crop=4).transform()(image)
    assert normalised.shape == (3, 4, 4) and normalised[0].eq(2).all() and normalised[1].eq(-2).all()
