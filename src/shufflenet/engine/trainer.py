"""Training: one loop from one CPU to many GPUs (``torchrun`` + DistributedDataParallel), resumable.

``Trainer`` reads in the order a run happens: set-up (processes, run folder, resume, data, model, optimiser),
then per epoch ``train_epoch`` (steps, each ending with the collective stop check), ``finish_epoch``
(evaluate, record, save). A stop (SIGINT / SIGTERM on any process, or the time budget) is decided by all
processes together at the same step, so none waits forever for another.
"""
from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.loaders import FileBatches, TensorBatches
from ..data.sources import DataSpec, TensorImages, batches, open_dataset, train_transform
from ..factory import create_model, model_runner
from ..io.atomic import write_atomically
from ..io.training_state import load_training_state, save_training_state
from ..io.weight_file import save_weights
from .config import RESUMABLE, TrainConfig
from .distributed import (
    all_max,
    average_buffers,
    gather_objects,
    ranks_in_sync,
    setup_distributed,
    shutdown,
)
from .evaluate import evaluate
from .run_folder import RunFolder

STATE_FILE = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    pass


class TrainingStopped(RuntimeError):
    """A signal stopped the run; its state is saved and ``--resume auto`` continues it."""


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then linear or cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return decay(min(1.0, progress), schedule)


def decay(progress: float, schedule: str) -> float:
    """From 1 at progress 0 to 0 at progress 1, linearly or along a half cosine."""
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
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
    """Where the run stands: the next epoch and batch to train, optimiser steps, training seconds so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    best_top1: float = -1.0
    finished: bool = False
    wall_seconds: float = 0.0  # wall-clock time of the run: training, evaluation, start-up


class Trainer:
    """Trains a classifier; a task with other data, model, loss or evaluation overrides ``open_training_set``,
    ``build_network``, ``open_data``, ``forward_loss``, ``evaluate`` and ``save_weights`` (``SCORE`` names the
    evaluation figure that picks the best epoch)."""

    SCORE = "top1"

    def __init__(self, config: TrainConfig, resume: str | None = None, overwrite: bool = False) -> None:
        self.sitting_start = time.perf_counter()
        self.ddp, self.device = setup_distributed()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.folder = RunFolder(config.output, config.name or f"{config.model}-{config.data}")
        state_path = self.folder.path / STATE_FILE
        if resume == "auto":
            resume = str(state_path) if state_path.exists() else None
        state = load_training_state(resume) if resume else None
        self.train_set, self.spec = self.open_training_set(config)
        self.config = self.reconcile(config, state)
        self.state_path = state_path
        if self.ddp.main:
            self.folder.acquire(resuming=state is not None, overwrite=overwrite)
        try:
            self.seed_everything()
            self.build_model()
            self.position = Position()
            if state is not None:
                self.restore(state)
            self.open_data()
            if self.ddp.main:
                write_atomically(self.folder.path / "config.json", json.dumps(asdict(self.config), indent=2).encode())
        except BaseException:
            self.folder.release()
            raise
        self.stop = StopSignal()
        self.result: dict[str, Any] = {}
        self.last_lr = 0.0
        self.wall_before = self.position.wall_seconds

    # --- set-up ---

    def open_training_set(self, config: TrainConfig) -> tuple[Any, DataSpec]:
        return open_dataset(config.data, "train", config.data_dir, download=config.download,
                            check_md5=config.check_md5)

    def build_network(self, config: TrainConfig) -> torch.nn.Module:
        kwargs: dict[str, Any] = {"small_input": config.small_input} if config.small_input else {}
        kwargs.update(config.model_kwargs())
        if config.drop_rate is not None:
            kwargs["drop_rate"] = config.drop_rate
        return create_model(config.model, num_classes=self.spec.num_classes, **kwargs)

    def reconcile(self, config: TrainConfig, state: dict[str, Any] | None) -> TrainConfig:
        """The configuration to run: a new run's, resolved from its recipe; a resumed run's own, with the
        changes a resume may make (``RESUMABLE``) applied and any other change refused."""
        if state is None:
            return config.resolved(self.spec)
        saved = type(config).from_dict(state["config"])
        changes = config.changes_from(saved)
        refused = {key: change for key, change in changes.items() if key not in RESUMABLE}
        if refused:
            listed = "; ".join(f"{key}: the run has {old!r}, given {new!r}" for key, (old, new) in refused.items())
            raise ValueError(f"a resume cannot change {', '.join(refused)} ({listed}); a resume may change only "
                             f"{', '.join(RESUMABLE)}; start a new run with a fresh --name to change the rest")
        if changes and self.ddp.main:
            tqdm.write("resume: " + ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items()))
        return replace(saved, **{key: new for key, (_, new) in changes.items()}, output=config.output,
                       name=self.folder.path.name)

    def seed_everything(self) -> None:
        seed = self.config.seed + self.ddp.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    def build_model(self) -> None:
        config = self.config
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.build_network(config).to(self.device).to(memory_format=self.memory_format)
        self.per_rank_batch = max(1, config.batch_size // self.ddp.world_size)
        self.peak_lr = config.lr * config.batch_size / config.lr_reference_batch
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, config.weight_decay), lr=self.peak_lr,
                                         momentum=config.momentum, nesterov=config.nesterov)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = (torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay else None)
        net = torch.nn.parallel.DistributedDataParallel(self.model) if self.ddp.active else self.model
        self.forward = torch.compile(net) if config.compile else net

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.position = Position(**state["position"])
        rng = state["rng"]
        set_rng_state(rng[self.ddp.rank] if len(rng) == self.ddp.world_size else rng[0])
        extended = (self.position.epoch < self.config.epochs and not self.budget_spent()) or self.position.batch
        self.position.finished = self.position.finished and not extended
        if self.ddp.main:
            self.keep_metrics_up_to(self.position.epoch)

    def open_data(self) -> None:
        config, spec, ddp = self.config, self.spec, self.ddp
        common = dict(seed=config.seed, rank=ddp.rank, world_size=ddp.world_size, device=self.device,
                      channels_last=config.channels_last, max_steps=config.max_steps_per_epoch)
        if isinstance(self.train_set, TensorImages):
            self.train_batches: TensorBatches | FileBatches = TensorBatches(
                self.train_set, spec.mean, spec.std, self.per_rank_batch, flip=spec.name != "digits", **common)
            workers = config.workers or 0
        else:
            workers = config.workers if config.workers is not None else min(8, torch.multiprocessing.cpu_count())
            self.train_set.transform = train_transform(spec)
            self.train_batches = FileBatches(self.train_set, self.per_rank_batch, workers=workers, **common)
        self.eval_set, _ = open_dataset(config.data, "test", config.data_dir, check_md5=config.check_md5,
                                        transform=spec.preprocessing().transform())
        self.eval_workers = workers
        self.total_steps = self.train_batches.steps_per_epoch * config.epochs
        self.warmup_steps = round(config.warmup_epochs * self.train_batches.steps_per_epoch)

    # --- the loop ---

    def run(self) -> dict[str, Any]:
        """Train to the end (or until stopped); returns the last epoch's figures and the paths of the files."""
        try:
            if self.position.finished:
                return self.finished_result()
            for epoch in range(self.position.epoch, self.config.epochs):
                epoch_figures = self.train_epoch(epoch)
                last = epoch + 1 == self.config.epochs or self.budget_spent()
                self.finish_epoch(epoch, epoch_figures, last)
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

    def lr_at(self, step: int, train_seconds: float) -> float:
        """The learning rate of ``step``. With a time budget the decay follows the clock (the fraction of the
        budget spent stands in for the fraction of steps done) and multiplies the warm-up ramp, so that the
        rate reaches 0 when the budget is spent even if that comes inside the warm-up."""
        config = self.config
        if config.time_budget is None:
            return self.peak_lr * lr_factor(step, self.total_steps, self.warmup_steps, config.schedule)
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return self.peak_lr * ramp * decay(min(1.0, train_seconds / (config.time_budget * 60)), config.schedule)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Steps through ``epoch`` from the saved position; ends early when the budget is spent, raises
        ``TrainingStopped`` (after saving) when a process got a signal."""
        config, position = self.config, self.position
        skip = position.batch if epoch == position.epoch else 0
        self.model.train()
        seen = correct = skipped = 0
        loss_sum = 0.0
        start = time.perf_counter()
        bar = tqdm(self.train_batches.epoch(epoch, skip), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not self.ddp.main, initial=skip, total=self.train_batches.steps_per_epoch, unit="step")
        steps = 0
        for batch, (images, labels, n_skipped) in enumerate(bar, start=skip):
            signalled, elapsed = all_max([float(self.stop.signal is not None), time.perf_counter() - start],
                                         self.ddp, self.device)
            if signalled:
                position.epoch, position.batch = epoch, batch
                position.train_seconds += elapsed
                self.save_state()
                raise TrainingStopped(self.stopped_message("stopped by a signal"))
            if config.time_budget is not None and position.train_seconds + elapsed >= config.time_budget * 60:
                break
            skipped += n_skipped
            steps += 1
            if not len(labels):
                continue
            loss, hits = self.step(images, labels, self.lr_at(position.step, position.train_seconds + elapsed))
            seen += len(labels)
            correct += hits
            loss_sum += loss * len(labels)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            img_s=f"{seen * self.ddp.world_size / (time.perf_counter() - start):.0f}")
        seconds = all_max([time.perf_counter() - start], self.ddp, self.device)[0]
        position.train_seconds += seconds
        return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
                "images_per_sec": seen * self.ddp.world_size / max(seconds, 1e-9), "skipped_images": skipped,
                "steps": steps}

    def forward_loss(self, images: Any, labels: Any) -> tuple[torch.Tensor, int]:
        """The training loss of a batch and how many of its images the model got right."""
        logits = self.forward(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        return loss, int((logits.detach().argmax(1) == labels).sum())

    def step(self, images: Any, labels: Any, lr: float) -> tuple[float, int]:
        """One optimiser step at learning rate ``lr``; returns the loss and the count of right answers."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, hits = self.forward_loss(images, labels)
        if all_max([float(not torch.isfinite(loss))], self.ddp, self.device)[0]:  # every process stops together
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {self.position.step} (epoch {self.position.epoch + 1}); last good "
                f"state: {self.state_path if self.state_path.exists() else 'none yet'}; resume it with a lower --lr "
                f"(--resume auto --lr X) or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.position.step += 1
        self.last_lr = lr
        return loss.item(), hits

    def finish_epoch(self, epoch: int, figures: dict[str, float], last: bool) -> None:
        """After an epoch: average BN statistics, evaluate (every ``eval_every`` epochs and after the last; with
        ``tta``, the last evaluation also with mirror images), record the metrics, save weights and state."""
        average_buffers(self.model, self.ddp)
        position = self.position
        position.epoch, position.batch = epoch + 1, 0
        evaluated = self.evaluate(tta=False) if last or (epoch + 1) % self.config.eval_every == 0 else {}
        if evaluated and evaluated[self.SCORE] > position.best_top1:
            position.best_top1 = evaluated[self.SCORE]
            if self.ddp.main:
                self.save_weights("best.safetensors", epoch)
        tta = self.evaluate(tta=True) if last and self.config.tta else {}
        position.wall_seconds = self.wall_before + time.perf_counter() - self.sitting_start
        self.result = {"epoch": epoch + 1, "step": position.step, **figures,
                       "train_seconds": round(position.train_seconds, 1),
                       "wall_seconds": round(position.wall_seconds, 1), "lr": self.last_lr,
                       "world_size": self.ddp.world_size,
                       **{f"eval_{key}": value for key, value in evaluated.items() if key != "per_class"},
                       **{f"eval_tta_{key}": value for key, value in tta.items() if key in ("top1", "top5")}}
        if self.ddp.active:
            self.result["ranks_in_sync"] = ranks_in_sync(self.model, self.ddp)
            if not self.result["ranks_in_sync"]:
                raise RuntimeError(f"the {self.ddp.world_size} processes hold different weights after epoch "
                                   f"{epoch + 1}")
        if self.ddp.main:
            self.record(self.result)
            self.save_weights("last.safetensors", epoch)
            scores = (f", eval {self.SCORE} {evaluated[self.SCORE]:.2f}" if evaluated else "") + (
                f" ({tta[self.SCORE]:.2f} with mirror images)" if tta else "")
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

    def evaluate(self, tta: bool) -> dict[str, Any]:
        """Top-1 / top-5 of the trained weights (the EMA's when kept) on the test split, shared by the processes;
        ``tta``: of each image and its mirror image."""
        indices = range(self.ddp.rank, len(self.eval_set), self.ddp.world_size)
        runner = model_runner(self.trained_model(), self.device, channels_last=self.config.channels_last,
                              tta=tta, amp=self.use_amp)
        return evaluate(runner, batches(self.eval_set, max(self.per_rank_batch, 256), workers=self.eval_workers,
                                        indices=indices), ddp=self.ddp)

    def trained_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # --- files ---

    def record(self, row: dict[str, Any]) -> None:
        """Append the epoch's metrics to metrics.jsonl (rank 0)."""
        with (self.folder.path / "metrics.jsonl").open("a") as file:
            file.write(json.dumps(row) + "\n")

    def save_weights(self, filename: str, epoch: int) -> None:
        save_weights(self.trained_model(), self.folder.path / filename, self.spec.preprocessing(),
                     f"shufflenet train {self.config.model} on {self.spec.name}, epoch {epoch + 1}",
                     self.spec.class_names, dataset=self.spec.name)

    def save_state(self) -> None:
        """The training state, written by rank 0 with every process's RNG state (all processes call this)."""
        states = gather_objects(rng_state(), self.ddp)
        if not self.ddp.main:
            return
        save_training_state({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "position": asdict(self.position), "rng": states, "config": asdict(self.config),
        }, self.state_path)

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
                "last_weights": str(run_dir / "last.safetensors"), "best_top1": self.position.best_top1,
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


def train(config: TrainConfig, resume: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config.model``; returns the last epoch's figures and the paths of the saved files."""
    return Trainer(config, resume, overwrite).run()

