"""Training end to end on the built-in digits: files, exact resume after SIGKILL / SIGTERM, divergence, config,
and many processes (gloo): collective stops, disjoint shards, the same update as one process."""
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
from shufflenet.engine import trainer as trainer_module
from shufflenet.engine.config import TrainConfig
from shufflenet.engine.schedule import lr_factor
from shufflenet.engine.trainer import Trainer, train

TINY = ["shufflenet_v1_x0_25_g8", "--data", "digits", "--batch-size", "64", "--max-steps-per-epoch", "4",
        "--threads", "1"]


def run_cli(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "shufflenet", *args]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def torchrun(*args: str, port: int, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "shufflenet", *args]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_every_result_and_its_figures_are_those_of_the_weights(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--output", str(tmp_path), "--name", "run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "run"
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "best.safetensors", "last.safetensors"} <= {
        p.name for p in run.iterdir()}
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 8
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "small" and config["small_input"] and config["lr"] == 0.3
    assert set(load_file(run / "last.safetensors")) == set(final_state(run))
    # The recorded top-1 is what the saved weights score, counted here without the package's evaluation.
    from shufflenet import load_weights
    from shufflenet.data.sources import open_dataset

    model = load_weights(run / "last.safetensors").eval()
    test_set, spec = open_dataset("digits", "test")
    images = (test_set.images.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        hits = (model(images).argmax(1) == test_set.labels).sum().item()
    assert result["eval_images"] == 450 and result["eval_top1"] == pytest.approx(100 * hits / 450)
    assert main(["eval", "--weights", str(run / "last.safetensors"), "--json"]) == 0  # data set from the file
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["data"] == "digits" and evaluated["top1"] == pytest.approx(rows[-1]["eval_top1"])
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "blank.png")
    assert main(["predict", str(run / "last.safetensors"), str(tmp_path / "blank.png")]) == 0
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
    path = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (path.exists() and len(path.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = len(path.read_text().splitlines())
    assert 2 <= done_before < 4, "the run should have been killed part-way"
    resumed = run_cli("train", *common, "--name", "killed", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    straight, killed = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    assert all(torch.equal(straight[k], killed[k]) for k in straight)
    assert [r["epoch"] for r in metrics(tmp_path / "killed")] == [1, 2, 3, 4]


def signal_at_step(monkeypatch, step: int) -> None:
    """Deliver SIGTERM to this process from inside optimiser step ``step`` (0-based): a deterministic place."""
    real, calls = trainer_module.train_step, []

    def step_then_signal(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == step + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(trainer_module, "train_step", step_then_signal)


def test_sigterm_saves_the_position_in_the_epoch_and_resume_is_exact(tmp_path, monkeypatch):
    def config(name):
        return TrainConfig(model="shufflenet_v1_x0_25_g8", epochs=2, batch_size=64, max_steps_per_epoch=12,
                           output=str(tmp_path), name=name, threads=1)

    train(config("straight"))
    signal_at_step(monkeypatch, 16)  # the 17th step: epoch 2, after its 5th batch
    from shufflenet.engine.trainer import TrainingStopped

    with pytest.raises(TrainingStopped, match="state saved"):
        train(config("stopped"))
    saved = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["position"]
    assert (saved["epoch"], saved["batch"], saved["step"]) == (1, 5, 17)
    monkeypatch.undo()
    train(config("stopped"), resume="auto")
    straight, stopped = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    assert all(torch.equal(straight[k], stopped[k]) for k in straight)


def test_divergence_stops_with_step_and_state(tmp_path):
    result = run_cli("train", *TINY, "--epochs", "2", "--lr", "1e30", "--output", str(tmp_path), "--name", "nan")
    assert result.returncode == 1
    assert "at step" in result.stderr and "--resume auto --lr" in result.stderr
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


def test_every_config_field_is_a_documented_option(capsys):
    from dataclasses import fields

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    from shufflenet.engine.config import flag_of

    for f in fields(TrainConfig):
        flag = f.name if f.name == "model" else flag_of(f)
        assert flag in text, flag
        assert " ".join(f.metadata["help"].split()[:4]) in text, f.name


def test_lr_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, "linear") == 0.0 and lr_factor(25, 100, 0, "linear") == pytest.approx(0.75)


def test_time_budget_inside_the_warm_up_still_ends_at_zero(tmp_path):
    trainer = Trainer(TrainConfig(model="shufflenet_v1_x0_25_g8", epochs=100, batch_size=64, threads=1,
                                  time_budget=1.0, output=str(tmp_path), name="b"))
    try:
        schedule = trainer.schedule
        assert schedule.warmup_steps == 21  # one epoch of 1,347 images in whole batches of 64
        assert schedule.lr(3, 30.0) == pytest.approx(schedule.peak * 4 / 21 * 0.5)  # half the budget, cosine
        assert schedule.lr(3, 60.0) == 0.0  # the budget is spent inside the warm-up: 0 all the same
    finally:
        trainer.close()


# --- many processes (gloo on CPU) ---

def two_process_run(tmp_path: Path, name: str, port: int, *extra: str) -> subprocess.CompletedProcess:
    return torchrun("train", *TINY, "--output", str(tmp_path), "--name", name, *extra, port=port)


def worker_pids(agent: subprocess.Popen) -> list[int]:
    """The processes torchrun started (children of its agent)."""
    children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def test_two_processes_stay_in_sync_and_sigterm_to_one_stops_both_saves_once_and_resumes(tmp_path):
    agent = torchrun("train", *TINY, "--epochs", "60", "--output", str(tmp_path), "--name", "stop", port=29573,
                     wait=False)
    path = tmp_path / "stop" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)
    workers = worker_pids(agent)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGTERM)  # only the second process gets the signal
    _, stderr = agent.communicate(timeout=300)
    assert stderr.count("state saved at") == 1, stderr[-3000:]  # written once, by rank 0
    saved = torch.load(tmp_path / "stop" / "checkpoint.pt", weights_only=True)
    assert len(saved["rng"]) == 2 and not saved["position"]["finished"]
    assert saved["position"]["epoch"] < 60
    resumed = two_process_run(tmp_path, "stop", 29574, "--epochs", str(saved["position"]["epoch"] + 2),
                              "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = metrics(tmp_path / "stop")
    assert [r["epoch"] for r in rows] == list(range(1, saved["position"]["epoch"] + 3))
    assert all(r["ranks_in_sync"] and r["world_size"] == 2 for r in rows)
    assert rows[-1]["eval_images"] == 450  # both halves of the test set counted once


def test_time_budget_of_two_processes_ends_both_at_the_same_step(tmp_path):
    result = two_process_run(tmp_path, "budget", 29575, "--epochs", "1000", "--time-budget", "0.05")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = torch.load(tmp_path / "budget" / "checkpoint.pt", weights_only=True)
    assert saved["position"]["finished"] and saved["position"]["train_seconds"] >= 3.0
    assert metrics(tmp_path / "budget")[-1]["ranks_in_sync"]
    again = two_process_run(tmp_path, "budget", 29576, "--resume", "auto")
    assert again.returncode == 0 and "is finished" in again.stdout
