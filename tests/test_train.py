"""Training end to end on the built-in digits: files, resume after SIGKILL / SIGTERM, divergence, config, DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shufflenet.cli import main
from shufflenet.train import TrainConfig, lr_factor, train

TINY = ["shufflenet_v1_x0_25_g8", "--data", "digits", "--batch-size", "64", "--max-steps-per-epoch", "4",
        "--threads", "1"]


def run_cli(*args: str, env_extra: dict | None = None, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = [sys.executable, "-m", "shufflenet", *args]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_train_writes_every_result_and_eval_reads_them(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--output", str(tmp_path), "--name", "run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "run"
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "best.safetensors", "last.safetensors"} <= {
        p.name for p in run.iterdir()}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 8
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "small" and config["small_input"] and config["lr"] == 0.3
    assert result["eval_images"] == 450 and 0 <= result["eval_top1"] <= 100
    assert set(load_file(run / "last.safetensors")) == set(final_state(run))
    assert main(["eval", "shufflenet_v1_x0_25_g8", "--weights", str(run / "last.safetensors"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "loss", "images"} <= set(evaluated) and evaluated["images"] == 450
    assert abs(evaluated["top1"] - rows[-1]["eval_top1"]) < 1e-9  # same weights, same test set
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "blank.png")
    assert main(["predict", "shufflenet_v1_x0_25_g8", str(tmp_path / "blank.png"), "--weights",
                 str(run / "last.safetensors")]) == 0
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(names) == 5 and set(names) <= {str(d) for d in range(10)}  # the digits' names, from the file


def test_eval_rejects_weights_of_another_architecture(tmp_path):
    train(TrainConfig(model="shufflenet_v1_x0_25_g8", epochs=1, batch_size=64, max_steps_per_epoch=1,
                      output=str(tmp_path), name="r", threads=1))
    result = run_cli("eval", "mobilenet_v2_x0_35", "--weights", str(tmp_path / "r" / "last.safetensors"))
    assert result.returncode == 2
    assert "holds weights for 'shufflenet_v1_x0_25_g8', not 'mobilenet_v2_x0_35'" in result.stderr


def test_sigkill_mid_run_then_resume_ends_at_the_uninterrupted_state(tmp_path):
    common = [*TINY, "--epochs", "4", "--output", str(tmp_path)]
    assert run_cli("train", *common, "--name", "straight").returncode == 0
    victim = run_cli("train", *common, "--name", "killed", wait=False)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = len(metrics.read_text().splitlines())
    assert 2 <= done_before < 4, "the run should have been killed part-way"
    resumed = run_cli("train", *common, "--name", "killed", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    straight, killed = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    assert all(torch.equal(straight[k], killed[k]) for k in straight)
    assert [json.loads(r)["epoch"] for r in metrics.read_text().splitlines()] == [1, 2, 3, 4]


def test_sigterm_saves_mid_epoch_and_resume_is_exact(tmp_path):
    common = [*TINY, "--epochs", "2", "--max-steps-per-epoch", "12", "--output", str(tmp_path)]
    assert run_cli("train", *common, "--name", "straight").returncode == 0
    victim = run_cli("train", *common, "--name", "stopped", wait=False)
    checkpoint = tmp_path / "stopped" / "checkpoint.pt"
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not metrics.exists():
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    victim.send_signal(signal.SIGTERM)
    _, stderr = victim.communicate(timeout=300)
    assert victim.returncode != 0 and "--resume auto" in stderr
    saved = torch.load(checkpoint, weights_only=True)
    resumed = run_cli("train", *common, "--name", "stopped", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    straight, stopped = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    assert all(torch.equal(straight[k], stopped[k]) for k in straight)
    assert (saved["epoch"], saved["batch_in_epoch"]) != (2, 0)


def test_divergence_stops_with_step_and_checkpoint(tmp_path):
    result = run_cli("train", *TINY, "--epochs", "2", "--lr", "1e30", "--output", str(tmp_path), "--name", "nan")
    assert result.returncode == 1
    assert "at step" in result.stderr and "last good checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_and_command_line_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 1\nlr: 0.05\nweight-decay: 0.001\nmax_steps_per_epoch: 1\n")
    (tmp_path / "c.toml").write_text("epochs = 1\nlr = 0.07\nmax_steps_per_epoch = 1\n")
    for config_file, expected_lr in (("c.yaml", 0.05), ("c.toml", 0.02)):
        extra = ["--lr", "0.02"] if config_file.endswith("toml") else []
        argv = ["train", "shufflenet_v1_x0_25_g8", "--config", str(tmp_path / config_file), "--threads", "1",
                "--output", str(tmp_path), "--name", f"run-{config_file}", *extra]
        assert main(argv) == 0
        saved = json.loads((tmp_path / f"run-{config_file}" / "config.json").read_text())
        assert saved["lr"] == expected_lr and saved["epochs"] == 1
    assert json.loads((tmp_path / "run-c.yaml" / "config.json").read_text())["weight_decay"] == 0.001
    with pytest.raises(ValueError, match="unknown config keys \\['lrr'\\]"):
        TrainConfig.from_dict({"model": "x", "lrr": 1})


def test_lr_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, "linear") == 0.0 and lr_factor(25, 100, 0, "linear") == pytest.approx(0.75)


def test_two_gloo_processes_stay_in_sync(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
               "-m", "shufflenet", "train", *TINY, "--epochs", "2", "--output", str(tmp_path), "--name", "ddp"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in rows] == [2, 2] and all(r["ranks_in_sync"] for r in rows)
    assert rows[-1]["eval_images"] == 450  # both halves of the test set counted once
