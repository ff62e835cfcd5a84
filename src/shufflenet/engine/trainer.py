"""Training: one loop from one CPU to many GPUs (``torchrun`` + DistributedDataParallel), resumable.

``train(config, task_type=...)`` opens the task's training set, settles the configuration (a new run's from
its recipe, a resumed run's own), builds the ``Learner`` (network, optimiser, scaler, EMA), then trains epoch
after epoch: ``train_epoch`` calls ``engine.step.train_step`` once per batch and, after each step, takes the
one collective decision of that step (a signal on any process, the time budget, a non-finite loss);
``finish_epoch`` evaluates, records and saves. A stop is decided by all processes together at the same step,
so none waits forever for another.
"""
from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..io.atomic import write_atomically
from ..io.training_state import load_training_state, save_training_state
from .config import RESUMABLE, Config
from .distributed import (
    Distributed,
    all_max,
    average_buffers,
    gather_objects,
    ranks_in_sync,
    setup_distributed,
    shutdown,
)
from .run_folder import RunFolder
from .schedule import Schedule
from .step import train_step
from .task import Batches, ClassificationTask, Task

STATE_FILE = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    pass


class TrainingStopped(RuntimeError):
    """A signal stopped the run; its state is saved and ``--resume auto`` continues it."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only (ndim > 1), not on BN or biases (official utils.py); frozen
    parameters are left out."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


class StopSignal:
    """SIGINT / SIGTERM become a flag that the loop reads at each step; the previous handlers come back on
    ``restore``."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread
            self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@dataclass
class Position:
    """Where the run stands: the next epoch and batch to train, optimiser steps, training seconds so far, the
    best evaluation score (the task's ``score``) and the wall-clock time of the run (training, evaluation,
    start-up)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    best_score: float = -1.0
    finished: bool = False
    wall_seconds: float = 0.0


@dataclass
class Learner:
    """What training changes: the ``model`` (``net`` is what runs it: the same model, or its DDP / compiled
    wrapper), the optimiser, the float16 gradient scaler and the EMA of the weights."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None
    amp_dtype: torch.dtype | None

    @classmethod
    def build(cls, network: nn.Module, config: Config, device: torch.device, ddp: Distributed) -> Learner:
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model = network.to(device).to(memory_format=memory_format)
        optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=peak_lr(config),
                                    momentum=config.momentum, nesterov=config.nesterov)
        amp_dtype = None
        if config.amp and device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        ema = (torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay else None)
        net = nn.parallel.DistributedDataParallel(model) if ddp.active else model
        return cls(model, torch.compile(net) if config.compile else net, optimizer, scaler, ema, amp_dtype)

    def trained(self) -> nn.Module:
        """The weights to evaluate and save: the EMA's when kept."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def peak_lr(config: Config) -> float:
    """``--lr`` scaled linearly with the batch (Goyal et al., 2017)."""
    return config.lr * config.batch_size / config.lr_reference_batch


def reconcile(config: Config, state: dict[str, Any] | None, spec: Any, main: bool) -> Config:
    """The configuration to run: a new run's, resolved from its recipe; a resumed run's own, with the changes a
    resume may make (``RESUMABLE``) applied and any other change refused."""
    if state is None:
        return config.resolved(spec)
    saved = type(config).from_dict(state["config"])
    changes = config.changes_from(saved)
    refused = {key: change for key, change in changes.items() if key not in RESUMABLE}
    if refused:
        listed = "; ".join(f"{key}: the run has {old!r}, given {new!r}" for key, (old, new) in refused.items())
        raise ValueError(f"a resume cannot change {', '.join(refused)} ({listed}); a resume may change only "
                         f"{', '.join(RESUMABLE)}; start a new run with a fresh --name to change the rest")
    if changes and main:
        tqdm.write("resume: " + ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items()))
    return replace(saved, **{key: new for key, (_, new) in changes.items()}, output=config.output)


class Trainer:
    """One run of a task: set up in ``__init__`` (processes, run folder, resume, task, learner), trained by
    ``run``."""

    def __init__(self, config: Config, task_type: type = ClassificationTask, resume: str | None = None,
                 overwrite: bool = False) -> None:
        self.sitting_start = time.perf_counter()
        self.ddp, self.device = setup_distributed(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.folder = RunFolder(config.output, config.run_name())
        self.state_path = self.folder.path / STATE_FILE
        if resume == "auto":
            resume = str(self.state_path) if self.state_path.exists() else None
        state = load_training_state(resume) if resume else None
        train_set, spec = task_type.open_training_set(config)
        self.config = reconcile(config, state, spec, self.ddp.main)
        if self.ddp.main:
            self.folder.acquire(resuming=state is not None, overwrite=overwrite)
        try:
            seed_everything(self.config.seed + self.ddp.rank)
            self.task: Task = task_type(self.config, train_set, spec)
            self.learner = Learner.build(self.task.network(), self.config, self.device, self.ddp)
            self.batches: Batches = self.task.batches(max(1, self.config.batch_size // self.ddp.world_size),
                                                      self.device, self.ddp)
            self.schedule = schedule_of(self.config, self.batches.steps_per_epoch)
            self.position = Position()
            if state is not None:
                self.restore(state)
            if self.ddp.main:
                write_atomically(self.folder.path / "config.json", json.dumps(asdict(self.config), indent=2).encode())
        except BaseException:
            self.folder.release()
            raise
        self.stop = StopSignal()
        self.result: dict[str, Any] = {}
        self.last_lr = 0.0
        self.wall_before = self.position.wall_seconds

    def restore(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)
        self.position = Position(**state["position"])
        rng = state["rng"]
        set_rng_state(rng[self.ddp.rank] if len(rng) == self.ddp.world_size else rng[0])
        extended = (self.position.epoch < self.config.epochs and not self.budget_spent()) or self.position.batch
        self.position.finished = self.position.finished and not extended
        if self.ddp.main:
            self.keep_metrics_up_to(self.position.epoch)

    # --- the loop ---

    def run(self) -> dict[str, Any]:
        """Train to the end (or until stopped); returns the last epoch's figures and the paths of the files."""
        try:
            if self.position.finished:
                return self.finished_result()
            for epoch in range(self.position.epoch, self.config.epochs):
                figures = self.train_epoch(epoch)
                last = epoch + 1 == self.config.epochs or self.budget_spent()
                self.finish_epoch(epoch, figures, last)
                if last:
                    break
            self.position.finished = True
            self.save_state()
            return self.summary()
        finally:
            self.close()

    def budget_spent(self) -> bool:
        budget = self.config.time_budget
        return budget is not None and self.position.train_seconds >= budget * 60

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Steps through ``epoch`` from the saved position. After each step all processes decide together:
        a non-finite loss raises ``TrainingDiverged``, a signal saves the state and raises ``TrainingStopped``,
        a spent time budget ends the epoch."""
        config, position, learner = self.config, self.position, self.learner
        skip = position.batch if epoch == position.epoch else 0
        learner.net.train()
        seen = correct = skipped = steps = 0
        loss_sum = elapsed = 0.0
        start = time.perf_counter()
        bar = tqdm(self.batches.epoch(epoch, skip), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not self.ddp.main, initial=skip, total=self.batches.steps_per_epoch, unit="step")
        for batch_index, batch in enumerate(bar, start=skip):  # a batch: (inputs, targets, images skipped)
            skipped += batch[-1]
            steps += 1
            if not len(batch[1]):  # every image of the batch was unreadable
                continue
            # The clock of a time budget as all processes agreed on it after the previous step: the same rate on all.
            lr = self.last_lr = self.schedule.lr(position.step, position.train_seconds + elapsed)
            loss, hits, samples = train_step(learner.net, batch, self.task.loss, learner.optimizer, lr,
                                             learner.scaler, learner.ema, learner.amp_dtype)
            loss_value = loss.item()
            diverged, signalled, elapsed = all_max(
                [float(samples > 0 and not np.isfinite(loss_value)), float(self.stop.signal is not None),
                 time.perf_counter() - start], self.ddp, self.device)  # the step's one collective decision
            if diverged:
                raise TrainingDiverged(
                    f"loss is {loss_value} at step {position.step} (epoch {epoch + 1}); last good state: "
                    f"{self.state_path if self.state_path.exists() else 'none yet'}; resume it with a lower --lr "
                    f"(--resume auto --lr X) or check the data")
            position.step += 1
            seen, correct, loss_sum = seen + samples, correct + hits, loss_sum + loss_value * samples
            accuracy = {"acc": f"{100 * correct / seen:.1f}"} if correct else {}  # a detector counts no hits
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", **accuracy, lr=f"{lr:.3g}",
                            img_s=f"{seen * self.ddp.world_size / (time.perf_counter() - start):.1f}")
            if signalled:
                position.epoch, position.batch = epoch, batch_index + 1
                position.train_seconds += elapsed
                self.save_state()
                raise TrainingStopped(self.stopped_message("stopped by a signal"))
            if config.time_budget is not None and position.train_seconds + elapsed >= config.time_budget * 60:
                break
        seconds = all_max([time.perf_counter() - start], self.ddp, self.device)[0]
        position.train_seconds += seconds
        return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
                "images_per_sec": seen * self.ddp.world_size / max(seconds, 1e-9), "skipped_images": skipped,
                "steps": steps}

    def finish_epoch(self, epoch: int, figures: dict[str, float], last: bool) -> None:
        """After an epoch: average BN statistics, evaluate (every ``eval_every`` epochs and after the last),
        record the metrics, save weights and state."""
        average_buffers(self.learner.model, self.ddp)
        position, score = self.position, self.task.score
        position.epoch, position.batch = epoch + 1, 0
        evaluated = (self.task.evaluate(self.learner.trained(), self.device, self.ddp, last)
                     if last or (epoch + 1) % self.config.eval_every == 0 else {})
        if evaluated and evaluated[score] > position.best_score:
            position.best_score = evaluated[score]
            if self.ddp.main:
                self.task.save_weights(self.learner.trained(), self.folder.path / "best.safetensors", epoch)
        position.wall_seconds = self.wall_before + time.perf_counter() - self.sitting_start
        self.result = {"epoch": epoch + 1, "step": position.step, **figures,
                       "train_seconds": round(position.train_seconds, 1),
                       "wall_seconds": round(position.wall_seconds, 1), "lr": self.last_lr,
                       "world_size": self.ddp.world_size,
                       **{f"eval_{key}": value for key, value in evaluated.items() if key != "per_class"}}
        if self.ddp.active:
            self.result["ranks_in_sync"] = ranks_in_sync(self.learner.model, self.ddp)
            if not self.result["ranks_in_sync"]:
                raise RuntimeError(f"the {self.ddp.world_size} processes hold different weights after epoch "
                                   f"{epoch + 1}")
        if self.ddp.main:
            self.record(self.result)
            self.task.save_weights(self.learner.trained(), self.folder.path / "last.safetensors", epoch)
            scores = (f", eval {score} {evaluated[score]:.2f}" if evaluated else "") + (
                f" ({evaluated['tta_' + score]:.2f} with mirror images)" if "tta_" + score in evaluated else "")
            tqdm.write(f"epoch {epoch + 1}/{self.config.epochs}: loss {figures['train_loss']:.4f}{scores}, "
                       f"{figures['images_per_sec']:.0f} img/s, {position.train_seconds / 60:.1f} min of training, "
                       f"{position.wall_seconds / 60:.1f} min in all")
        self.save_state()
        if all_max([float(self.stop.signal is not None)], self.ddp, self.device)[0]:
            raise TrainingStopped(self.stopped_message(f"stopped by a signal after epoch {epoch + 1}"))

    def stopped_message(self, what: str) -> str:
        if self.ddp.main:
            return f"{what}; state saved at {self.state_path}"
        return f"{what} (process {self.ddp.rank} of {self.ddp.world_size}, with the others)"

    # --- files ---

    def record(self, row: dict[str, Any]) -> None:
        """Append the epoch's metrics to metrics.jsonl (rank 0)."""
        with (self.folder.path / "metrics.jsonl").open("a") as file:
            file.write(json.dumps(row) + "\n")

    def save_state(self) -> None:
        """The training state, written by rank 0 with every process's RNG state (all processes call this)."""
        states = gather_objects(rng_state(), self.ddp)
        if not self.ddp.main:
            return
        save_training_state({**self.learner.state_dict(), "position": asdict(self.position), "rng": states,
                             "config": asdict(self.config)}, self.state_path)

    def keep_metrics_up_to(self, epochs_done: int) -> None:
        """Drop metric lines of epochs after the saved state (a resumed run trains them again)."""
        path = self.folder.path / "metrics.jsonl"
        if not path.exists():
            return
        rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= epochs_done]
        write_atomically(path, "".join(row + "\n" for row in rows).encode())

    def summary(self) -> dict[str, Any]:
        run_dir = self.folder.path
        return {**self.result, "run_dir": str(run_dir), "best_weights": str(run_dir / "best.safetensors"),
                "last_weights": str(run_dir / "last.safetensors"), "best_score": self.position.best_score,
                "finished": self.position.finished}

    def finished_result(self) -> dict[str, Any]:
        """A resume of a run that has nothing left to do: its last recorded epoch."""
        path = self.folder.path / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
        self.result = rows[-1] if rows else {}
        return {**self.summary(), "already_finished": True}

    def close(self) -> None:
        self.stop.restore()
        if self.ddp.main:
            self.folder.release()
        shutdown(self.ddp)


def schedule_of(config: Config, steps_per_epoch: int) -> Schedule:
    return Schedule(peak_lr(config), steps_per_epoch * config.epochs, round(config.warmup_epochs * steps_per_epoch),
                    config.schedule, None if config.time_budget is None else config.time_budget * 60)


def train(config: Config, resume: str | None = None, overwrite: bool = False,
          task_type: type = ClassificationTask) -> dict[str, Any]:
    """Train ``config`` as ``task_type`` (classification by default); returns the last epoch's figures and the
    paths of the saved files."""
    return Trainer(config, task_type, resume, overwrite).run()

