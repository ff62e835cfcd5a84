"""Nothing lost, every bad input a one-line error: one test per class of fault.

Classes: a run folder is never silently replaced or shared; a resume applies what it may change and refuses
the rest; unreadable files; outputs that cannot be written (checked before the work); numbers out of range
(one check for the command line, config files and grids); bad config files; hostile or unusual images; weight
files whose record disagrees with their tensors; results that would be quietly wrong.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from shufflenet import create_model, save_weights
from shufflenet.cli import main
from shufflenet.data.images import MAX_PIXELS, read_image
from shufflenet.engine.config import TrainConfig
from shufflenet.engine.run_folder import RunFolder

TINY = ["train", "shufflenet_v1_x0_25_g8", "--batch-size", "64", "--max-steps-per-epoch", "3", "--threads", "1"]


def one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def run(*argv: str) -> int:
    return main(list(argv))


# --- a run folder is never silently replaced or shared ---

def test_a_new_run_never_replaces_an_earlier_one(tmp_path, capsys):
    common = [*TINY, "--output", str(tmp_path), "--name", "ow"]
    assert run(*common, "--epochs", "2") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "ow").iterdir() if p.is_file()}
    capsys.readouterr()
    assert run(*common, "--epochs", "1", "--lr", "1e-4") == 2
    message = one_line_error(capsys)
    assert "already holds a run" in message and "--resume auto" in message and "--name" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "ow").iterdir() if p.is_file()} == before
    assert run(*common, "--epochs", "1", "--overwrite") == 0  # explicit: replaced
    assert [json.loads(r)["epoch"] for r in (tmp_path / "ow" / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_run_folder_is_owned_by_one_run_and_a_dead_owner_frees_it(tmp_path, capsys):
    owner = RunFolder(tmp_path, "busy")
    owner.acquire(resuming=False, overwrite=False)
    try:
        assert run(*TINY, "--epochs", "1", "--output", str(tmp_path), "--name", "busy") == 2
        assert "in use by another run" in one_line_error(capsys)
    finally:
        owner.release()  # what the operating system does when the owner dies
    assert run(*TINY, "--epochs", "1", "--output", str(tmp_path), "--name", "busy") == 0


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/abs"])
def test_run_names_cannot_leave_the_output_folder(tmp_path, capsys, name):
    assert run(*TINY, "--epochs", "1", "--output", str(tmp_path / "out"), "--name", name) == 2
    assert "plain folder name" in one_line_error(capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


# --- resume: what it may change is applied, the rest refused at the start ---

def test_resume_of_a_finished_run_says_so_and_extends_when_asked(tmp_path, capsys):
    common = [*TINY, "--output", str(tmp_path), "--name", "r"]
    assert run(*common, "--epochs", "2") == 0
    capsys.readouterr()
    assert run(*common, "--resume", "auto") == 0
    assert "is finished (epoch 2" in capsys.readouterr().out
    assert run(*common, "--resume", "auto", "--epochs", "3", "--lr", "0.01", "--json") == 0
    out = capsys.readouterr()
    assert "resume: epochs 2 -> 3, lr 0.3 -> 0.01" in out.err + out.out
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["epochs"], config["lr"]) == (3, 0.01)
    # the third epoch ran at the new peak, cosine over 3 epochs: its last step is step 8 of 9 (warm-up: 3 steps)
    import math

    peak = 0.01 * 64 / 256  # the peak scales with the batch (--lr is given at batch 256)
    assert rows[-1]["lr"] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * (8 - 3) / 6)))


@pytest.mark.parametrize("change,message", [
    (["--batch-size", "32"], "cannot change batch_size"),
    (["--seed", "3"], "cannot change seed"),
])
def test_resume_refuses_other_changes_at_the_start(tmp_path, capsys, change, message):
    common = [*TINY, "--output", str(tmp_path), "--name", "r"]
    assert run(*common, "--epochs", "1") == 0
    capsys.readouterr()
    assert run(*common, "--resume", "auto", "--epochs", "2", *change) == 2
    assert message in one_line_error(capsys)


def test_resume_with_another_model_is_refused_before_training(tmp_path, capsys):
    assert run(*TINY, "--epochs", "1", "--output", str(tmp_path), "--name", "r") == 0
    capsys.readouterr()
    assert run("train", "shufflenet_v1_x0_25_g3", "--output", str(tmp_path), "--name", "r", "--resume", "auto") == 2
    assert "cannot change model" in one_line_error(capsys)


# --- unreadable files: one line, whatever the command ---

@pytest.fixture
def bad_files(tmp_path):
    files = {"empty.safetensors": b"", "text.pth": b"hello world\n", "empty.onnx": b"",
             "corrupt.onnx": b"\x08\x07garbage" * 10}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    return tmp_path


@pytest.mark.parametrize("command", ["eval", "predict", "export", "convert"])
@pytest.mark.parametrize("bad", ["empty.safetensors", "text.pth"])
def test_unreadable_weight_files(bad_files, capsys, command, bad):
    path = str(bad_files / bad)
    argv = {"eval": ["eval", "--weights", path, "--data", "digits"],
            "predict": ["predict", path, str(bad_files / "image.png")],
            "export": ["export", "shufflenet_v1_x0_25_g8", "--weights", path, "-o", str(bad_files / "o.onnx")],
            "convert": ["convert", path, str(bad_files / "o.safetensors"), "--from", "megvii"]}[command]
    assert run(*argv) == 2
    message = one_line_error(capsys)
    assert "empty (0 bytes)" in message or "not a PyTorch or safetensors file (KeyError" in message


@pytest.mark.parametrize("bad", ["empty.onnx", "corrupt.onnx"])
def test_unreadable_onnx_files(bad_files, capsys, bad):
    assert run("predict", str(bad_files / bad), str(bad_files / "image.png")) == 2
    assert "export it again" in one_line_error(capsys)


# --- outputs that cannot be written: refused before the work ---

def test_unwritable_outputs_are_refused_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = str(blocker / "out")
    for argv in (["export", "shufflenet_v1_x0_25_g8", "-o", f"{target}.onnx", "--resolution", "64"],
                 ["bench", "shufflenet_v1_x0_25_g8", "--json", f"{target}.json", "--resolution", "64"],
                 [*TINY, "--epochs", "1", "--output", target]):
        assert run(*argv) == 2, argv
        assert "does not exist" in (message := one_line_error(capsys)) or "cannot create" in message
    save_weights(create_model("shufflenet_v1_x0_25_g8"), tmp_path / "w.safetensors")
    assert run("convert", str(tmp_path / "w.safetensors"), f"{target}.safetensors", "--from", "megvii") == 2
    one_line_error(capsys)


def test_a_failed_int8_export_keeps_the_earlier_file(tmp_path, capsys):
    from conftest import write_fake_cifar

    write_fake_cifar(tmp_path / "calib")
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "bad.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "q.onnx"
    out.write_bytes(b"the earlier export")
    assert run("export", "shufflenet_v1_x0_25_g8", "--num-classes", "10", "--resolution", "32", "-o", str(out),
               "--int8", "--calib", str(tmp_path / "calib"), "--calib-count", "4", "--no-md5-check",
               "--evaluate", str(unreadable)) == 2
    assert "no readable images" in one_line_error(capsys)
    assert out.read_bytes() == b"the earlier export" and sorted(p.name for p in tmp_path.iterdir()) == [
        "calib", "q.onnx", "unreadable"]


# --- numbers out of range: one check shared by the command line, config files and grids ---

@pytest.mark.parametrize("argv,message", [
    ([*TINY, "--batch-size", "0"], "batch_size must be >= 1"),
    ([*TINY, "--epochs", "0"], "epochs must be >= 1"),
    ([*TINY, "--time-budget", "-1"], "time_budget must be > 0"),
    ([*TINY, "--threads", "-1"], "threads must be >= 1"),
    ([*TINY, "--label-smoothing", "2"], "label_smoothing must be < 1"),
    (["profile", "shufflenet_v1_x0_5_g3", "--resolution", "-5"], "must be >= 1"),
    (["bench", "shufflenet_v1_x0_25_g8", "--threads", "0"], "must be >= 1"),
    (["predict", "shufflenet_v1_x0_25_g8", "x.png", "--top", "-1"], "must be >= 1"),
    (["models", "nomatch*"], "no registered model matches 'nomatch*'"),
])
def test_numbers_out_of_range(tmp_path, capsys, argv, message):
    assert run(*argv, *(["--output", str(tmp_path)] if argv[0] == "train" else [])) == 2
    assert message in one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_grids_share_the_config_check():
    with pytest.raises(ValueError, match="epochs must be int, got 'three'"):
        TrainConfig.from_dict({"model": "shufflenet_v1_x0_5_g3", "epochs": "three"})
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(model="shufflenet_v1_x0_5_g3", lr=0.0)


@pytest.mark.parametrize("text,suffix,message", [
    (None, ".yaml", "does not exist"),
    ("epochs: [1, 2\n", ".yaml", "is not valid YAML"),
    ("epochs = \n", ".toml", "is not valid TOML"),
    ("epochs: three\n", ".yaml", "epochs must be int, got 'three'"),
    ("- 1\n- 2\n", ".yaml", "must hold a mapping"),
])
def test_bad_config_files(tmp_path, capsys, text, suffix, message):
    path = tmp_path / f"config{suffix}"
    if text is not None:
        path.write_text(text)
    assert run(*TINY, "--config", str(path), "--output", str(tmp_path / "runs")) == 2
    assert message in one_line_error(capsys)


# --- images: hostile or unusual ---

def test_decompression_bomb_is_refused(tmp_path, capsys):
    side = int(MAX_PIXELS ** 0.5) + 64
    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)  # a few kB on disk, 70 megapixels decoded
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match="more than the .* allowed"):
        read_image(bomb)
    assert run("predict", "shufflenet_v1_x0_25_g8", str(bomb)) == 2
    assert "decompression bomb" in one_line_error(capsys)


def test_unusual_image_modes_come_out_right(tmp_path):
    gray16 = np.full((8, 8), 32768, dtype=np.uint16)  # half scale in 16 bits
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert np.asarray(read_image(tmp_path / "gray16.png"))[0, 0].tolist() == [128, 128, 128]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    red = np.asarray(read_image(tmp_path / "cmyk.jpg"))[0, 0]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 0, 255] * 256)  # every index is blue
    palette.save(tmp_path / "palette.png")
    assert np.asarray(read_image(tmp_path / "palette.png"))[0, 0].tolist() == [0, 0, 255]
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "transparent.png")  # fully transparent: white
    assert np.asarray(read_image(tmp_path / "transparent.png"))[0, 0].tolist() == [255, 255, 255]


def test_download_without_a_network_is_one_line(tmp_path, monkeypatch, capsys):
    from torchvision import datasets

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(datasets.CIFAR10, "__init__", no_network)
    assert run(*TINY, "--data", "cifar10", "--data-dir", str(tmp_path), "--download", "--output",
               str(tmp_path / "runs")) == 2
    assert "cannot download cifar10" in one_line_error(capsys)


# --- weight files whose record disagrees with their tensors, and quietly wrong results ---

def test_a_forged_class_count_is_refused_before_anything_is_built(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    save_weights(create_model("shufflenet_v1_x0_25_g8", num_classes=10), path)
    with safe_open(path, "pt") as file:
        metadata = dict(file.metadata())
    metadata["shufflenet.num_classes"] = "1000000000"
    save_file(load_file(path), tmp_path / "forged.safetensors", metadata)
    assert run("eval", "--weights", str(tmp_path / "forged.safetensors"), "--data", "digits") == 2
    assert "records 1000000000 classes but its classifier has 10 rows" in one_line_error(capsys)


def test_predict_from_random_weights_warns(tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "i.png")
    assert run("predict", "shufflenet_v1_x0_25_g8", str(tmp_path / "i.png")) == 0
    assert "randomly initialised" in capsys.readouterr().err


def test_eval_without_data_of_a_file_that_records_none(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    save_weights(create_model("shufflenet_v1_x0_25_g8", num_classes=10), path)  # no data set recorded
    assert run("eval", "--weights", str(path)) == 2
    assert "does not record its data set; give --data" in one_line_error(capsys)


def test_the_refused_pickle_names_the_callable(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    assert run("eval", "--weights", str(tmp_path / "evil.pth"), "--data", "digits") == 2
    assert "(posix.system)" in one_line_error(capsys)


def test_the_one_line_of_any_caught_error():
    from shufflenet.errors import first_line

    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("  bad header\n  at byte 9\n")) == "RuntimeError: bad header"
