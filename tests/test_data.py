import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from conftest import write_fake_cifar
from PIL import Image

from shufflenet.data.cifar import load_cifar
from shufflenet.data.loaders import TensorBatches, shard
from shufflenet.data.preprocessing import Preprocessing
from shufflenet.data.sources import batches, open_dataset, open_folder

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


def test_digits_splits_are_disjoint_and_stratified():
    train, spec = open_dataset("digits", "train")
    test, _ = open_dataset("digits", "test")
    assert (len(train), len(test), spec.num_classes) == (1347, 450, 10)
    assert torch.bincount(test.labels).min() >= 40  # stratified: every digit in the test set
    train_rows = {bytes(image.numpy()) for image in train.images}
    assert sum(bytes(image.numpy()) in train_rows for image in test.images) < 5  # (a few digits repeat exactly)


def test_tensor_batches_augment_by_translation_and_alternating_flips():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).to(torch.uint8)
    from shufflenet.data.sources import TensorImages

    data = TensorImages(images, torch.tensor([0, 1]))
    loader = TensorBatches(data, (0.0,) * 3, (1 / 255,) * 3, 2, seed=0, padding=1, channels_last=False)
    shifts = torch.tensor([[1, 1], [0, 2]])  # (row, column) offsets into the 1-pixel zero padding
    out = loader.augment(torch.tensor([0, 1]), shifts, torch.tensor([False, True]))
    torch.testing.assert_close(out[0], images[0].float())  # offset (1, 1) is the unpadded image
    expected = torch.nn.functional.pad(images[1].float(), [1, 1, 1, 1])[:, 0:4, 2:6].flip(2)
    torch.testing.assert_close(out[1], expected)
    first = next(loader.epoch(0))
    again = next(loader.epoch(0))
    torch.testing.assert_close(again[0], first[0])  # an epoch replays exactly (resume)

    # Alternating flips, read off the batches: with no padding each output is its image (label = index) or its
    # mirror image, and an image flipped in one epoch is not in the next.
    n = 16
    images = torch.randint(0, 256, (n, 3, 5, 5), dtype=torch.uint8)
    plain = TensorBatches(TensorImages(images, torch.arange(n)), (0.0,) * 3, (1 / 255,) * 3, n, seed=0, padding=0,
                          channels_last=False)

    def flipped(epoch: int) -> dict[int, bool]:
        out, labels, _ = next(plain.epoch(epoch))
        seen = {}
        for image, label in zip(out, labels.tolist()):
            source = images[label].float()
            assert torch.equal(image, source) or torch.equal(image, source.flip(2)), label
            seen[label] = not torch.equal(image, source)
        return seen

    epochs = [flipped(epoch) for epoch in range(3)]
    assert len(epochs[0]) == n and 0 < sum(epochs[0].values()) < n  # about half flipped, not all or none
    assert all(epochs[1][i] != epochs[0][i] for i in range(n))  # alternating
    assert epochs[2] == epochs[0]


def test_shards_are_disjoint_and_cover_the_epoch():
    order = torch.randperm(103)
    shards = [shard(order, rank, 4) for rank in range(4)]
    assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
    seen = torch.cat(shards)
    assert set(seen.tolist()) == set(range(103)) and len(seen) - 103 == 1  # one index repeated as padding
    assert len(set(shards[0].tolist()) & set(shards[1].tolist())) == 0


def test_eval_split_reads_no_training_file(tmp_path):
    folder = write_fake_cifar(tmp_path)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        (folder / name).unlink()
    test, spec = open_dataset("cifar10", "test", tmp_path, check_md5=False)
    assert len(test) == 10000 and spec.num_classes == 10


def test_image_folder_skips_unreadable_images(tmp_path, capsys):
    write_image_folder(tmp_path, corrupt=True)
    train, spec = open_dataset("imagefolder", "train", tmp_path, transform=Preprocessing().transform())
    assert spec.class_names == ["cat", "dog"] and spec.image_size == 224
    got = list(batches(train, 4))
    assert sum(len(labels) for _, labels in got) == 6 and got[0][0].shape[1:] == (3, 224, 224)
    printed = capsys.readouterr().out
    assert "skipping an unreadable image" in printed and "broken.png" in printed


@pytest.mark.parametrize("layout,message", [
    ("missing", "no val/ folder"),
    ("no-val", "no val/ folder"),
    ("empty-class", "does not know|no class folders"),
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
        (root / "val" / "bird").mkdir()
        Image.new("RGB", (8, 8)).save(root / "val" / "bird" / "0.png")
    with pytest.raises(ValueError, match=message):
        open_dataset("imagefolder", "test", root)


def test_folders_are_opened_by_their_layout(tmp_path):
    write_image_folder(tmp_path / "tree")
    calibration, names = open_folder(tmp_path / "tree", "train")  # a train/ + val/ tree: train/ for calibration
    scored, _ = open_folder(tmp_path / "tree", "test")
    assert names == ["cat", "dog"] and len(calibration) == len(scored) == 6
    assert {str(p.parent.parent.name) for p in scored.paths} == {"val"}
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    images, names = open_folder(flat, "train")
    assert names is None and images.labels == [-1]
    relabelled, order = open_folder(tmp_path / "tree" / "val", "test", class_names=["dog", "cat"])
    assert order == ["dog", "cat"] and relabelled.labels[0] == 1  # cat is the model's class 1


def test_cifar_reader_checks_md5_and_loads_a_faithful_copy_explicitly(tmp_path):
    folder = write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match="MD5 mismatch.*--no-md5-check"):
        load_cifar(tmp_path, "cifar10", train=True)
    images, labels, classes = load_cifar(tmp_path, "cifar10", train=False, check_md5=False)
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
        load_cifar(tmp_path, "cifar10", train=False, check_md5=False)
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no cifar10 data at .*--data-dir.*--download"):
        open_dataset("cifar10", "train", tmp_path)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="real CIFAR-10 not present at ../shared/data/cifar10")
def test_real_cifar10():
    train, spec = open_dataset("cifar10", "train", SHARED_CIFAR, check_md5=False)
    test, _ = open_dataset("cifar10", "test", SHARED_CIFAR, check_md5=False)
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
