"""Training: one loop from one CPU to many GPUs (``torchrun`` + DistributedDataParallel), resumable.

Read top to bottom: config and recipes, set-up (distributed, data, model, optimiser), the loop, checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import atomic_save, load_checkpoint
from .data import DataSpec, build_datasets, collate_skipping_unreadable
from .evaluate import evaluate
from .registry import create_model
from .files import write_atomically
from .weights import save_weights

# Recipes. "imagenet": ShuffleNet Sec. 4 and the official train.py: SGD momentum 0.9, lr 0.5 at batch 1024 scaled
# linearly with the batch, weight decay 4e-5 on conv/linear weights only, linear decay to 0, label smoothing 0.1,
# 300k iterations at batch 1024 (~240 epochs). "small" (32x32 data, ours): SGD Nesterov, lr 0.3 at batch 256,
# cosine to 0 after a 1-epoch warm-up, weight decay 5e-4, label smoothing 0.1.
RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": dict(epochs=240, batch_size=1024, lr=0.5, lr_reference_batch=1024, nesterov=False, weight_decay=4e-5,
                     schedule="linear", warmup_epochs=0.0, label_smoothing=0.1),
    "small": dict(epochs=30, batch_size=256, lr=0.3, lr_reference_batch=256, nesterov=True, weight_decay=5e-4,
                  schedule="cosine", warmup_epochs=1.0, label_smoothing=0.1),
}


@dataclass
class TrainConfig:
    model: str
    data: str = "digits"
    data_dir: str | None = None
    download: bool = False
    check_md5: bool = True
    recipe: str | None = None  # default: "small" for 32x32 data, else "imagenet"
    epochs: int | None = None
    batch_size: int | None = None  # global batch, split over the processes
    lr: float | None = None  # at lr_reference_batch; scaled linearly with batch_size
    lr_reference_batch: int | None = None
    momentum: float = 0.9
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: str | None = None  # linear | cosine
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    small_input: bool | None = None  # default: on for 32x32 data (ShuffleNet only)
    drop_rate: float | None = None
    ema_decay: float | None = None  # e.g. 0.9998; evaluation then uses the EMA weights
    compile: bool = False
    amp: bool = True  # automatic mixed precision, on CUDA only
    channels_last: bool = True
    workers: int | None = None  # default: 0 for in-memory data, else min(8, cores)
    seed: int = 0
    output: str = "runs"
    name: str | None = None  # run folder under output; default: model-data
    max_steps_per_epoch: int | None = None  # for smoke tests
    time_budget: float | None = None  # minutes of training (evaluation excluded); the schedule then runs on
    #   the clock: it decays to 0 when the budget is spent, and training stops there (epochs is an upper bound)
    threads: int | None = None  # CPU threads per process

    def resolved(self, spec: DataSpec) -> "TrainConfig":
        """Fill every unset field from the recipe for this dataset."""
        recipe_name = self.recipe or ("small" if spec.small_images else "imagenet")
        if recipe_name not in RECIPES:
            raise ValueError(f"unknown recipe {recipe_name!r}; choose one of {sorted(RECIPES)}")
        values = asdict(self)
        values["recipe"] = recipe_name
        for key, default in RECIPES[recipe_name].items():
            if values[key] is None:
                values[key] = default
        if values["small_input"] is None:
            values["small_input"] = spec.small_images and self.model.startswith("shufflenet")
        if values["schedule"] not in ("linear", "cosine"):
            raise ValueError(f"schedule must be linear or cosine, got {values['schedule']!r}")
        values["name"] = values["name"] or f"{self.model}-{spec.name}"
        return TrainConfig(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> tuple[Distributed, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Distributed(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank), device


def epoch_indices(size: int, epoch: int, seed: int, ddp: Distributed) -> list[int]:
    """This process's share of a permutation that depends only on (seed, epoch): resuming replays it exactly."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    per_rank = math.ceil(size / ddp.world_size)
    order += order[: per_rank * ddp.world_size - size]  # pad so every rank takes the same number of steps
    return order[ddp.rank::ddp.world_size]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only (ndim > 1), not on BN or biases (official utils.py)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then linear or cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def average_buffers(model: torch.nn.Module, world_size: int) -> None:
    """Average the BN running statistics over the processes (each updated them on its own last batch)."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world_size
        else:
            dist.broadcast(buffer, 0)


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """Whether every process holds exactly rank 0's parameters and buffers (DDP's promise, checked)."""
    flat = torch.cat([t.detach().double().flatten().cpu() for t in model.state_dict().values()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return difference.item() == 0.0


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


class StopRequested:
    """Turns SIGINT / SIGTERM into a flag that the loop checks after each step (it then saves and exits)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum


def train(config: TrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Train ``config.model``; returns the final evaluation and the paths of the saved files."""
    ddp, device = setup_distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    train_set, eval_set, spec = build_datasets(config.data, config.data_dir, config.download, config.check_md5)
    run_dir = Path(config.output) / (config.name or f"{config.model}-{spec.name}")
    checkpoint_path = run_dir / "checkpoint.pt"
    if resume == "auto":
        resume = str(checkpoint_path) if checkpoint_path.exists() else None
    checkpoint = load_checkpoint(resume) if resume else None
    if checkpoint is not None:  # the run's own config wins; only its location may come from the command line
        config = TrainConfig.from_dict({**checkpoint["config"], "output": config.output, "name": run_dir.name})
    else:
        config = config.resolved(spec)
    torch.manual_seed(config.seed + ddp.rank)
    random.seed(config.seed + ddp.rank)
    np.random.seed(config.seed + ddp.rank)

    model_kwargs: dict[str, Any] = {}
    if config.model.startswith("shufflenet"):
        model_kwargs["small_input"] = config.small_input
    if config.drop_rate is not None:
        model_kwargs["drop_rate"] = config.drop_rate
    model = create_model(config.model, num_classes=spec.num_classes, **model_kwargs).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    per_rank_batch = max(1, config.batch_size // ddp.world_size)
    peak_lr = config.lr * config.batch_size / config.lr_reference_batch
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=peak_lr, momentum=config.momentum,
                                nesterov=config.nesterov)
    steps_per_epoch = math.ceil(len(train_set) / ddp.world_size / per_rank_batch)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    budget_seconds = config.time_budget * 60 if config.time_budget else None
    clock = {"train_seconds": 0.0, "epoch_start": time.perf_counter()}

    def trained_seconds() -> float:
        return clock["train_seconds"] + time.perf_counter() - clock["epoch_start"]

    def schedule(step: int) -> float:
        if budget_seconds is None:
            return lr_factor(step, total_steps, warmup_steps, config.schedule)
        # On the clock: the fraction of the budget spent stands in for the fraction of steps done.
        virtual_step = warmup_steps + (total_steps - warmup_steps) * min(1.0, trained_seconds() / budget_seconds)
        return lr_factor(step if step < warmup_steps else round(virtual_step), total_steps, warmup_steps,
                         config.schedule)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay else None)

    start_epoch, start_batch, step, best_top1, train_seconds = 0, 0, 0, -1.0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        start_epoch, start_batch, step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]
        best_top1, train_seconds = checkpoint["best_top1"], checkpoint["train_seconds"]
        set_rng_state(checkpoint["rng"][ddp.rank] if isinstance(checkpoint["rng"], list) else checkpoint["rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world_size > 1 else model
    forward = torch.compile(net) if config.compile else net
    metrics_path = run_dir / "metrics.jsonl"
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(run_dir / "config.json", json.dumps(asdict(config), indent=2).encode())
        keep_metrics_up_to(metrics_path, start_epoch)
    board = tensorboard_writer(run_dir) if ddp.main else None
    workers = config.workers if config.workers is not None else (0 if hasattr(train_set, "images")
                                                                  else min(8, os.cpu_count() or 1))
    stop = StopRequested()

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        states = [None] * ddp.world_size
        local = rng_state()
        if ddp.world_size > 1:
            dist.all_gather_object(states, local)
        else:
            states = [local]
        if ddp.main:
            atomic_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step, "best_top1": best_top1,
                "train_seconds": train_seconds, "rng": states, "config": asdict(config),
            }, checkpoint_path)

    result: dict[str, Any] = {}
    clock["train_seconds"] = train_seconds
    for epoch in range(start_epoch, config.epochs):
        if budget_seconds is not None and train_seconds >= budget_seconds:
            break
        indices = epoch_indices(len(train_set), epoch, config.seed, ddp)[: steps_per_epoch * per_rank_batch]
        skip = start_batch if epoch == start_epoch else 0
        # Its own generator (for worker seeds), so that building the loader leaves the global RNG untouched.
        loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=indices[skip * per_rank_batch:],
                            num_workers=workers, collate_fn=collate_skipping_unreadable,
                            generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch),
                            pin_memory=device.type == "cuda")
        net.train()
        seen = correct = skipped = 0
        loss_sum = 0.0
        epoch_start = clock["epoch_start"] = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not ddp.main, leave=False,
                   initial=skip, total=steps_per_epoch, unit="step")
        for batch_in_epoch, (images, labels, n_skipped) in enumerate(bar, start=skip):
            skipped += n_skipped
            if len(labels) == 0:
                continue
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = forward(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at step {step} (epoch {epoch + 1}, batch {batch_in_epoch}); "
                    f"last good checkpoint: {checkpoint_path if checkpoint_path.exists() else 'none yet'}; "
                    f"lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            seen += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += loss.item() * len(labels)
            elapsed = time.perf_counter() - epoch_start
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            img_s=f"{seen * ddp.world_size / elapsed:.0f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
            if stop.signal is not None:
                train_seconds += elapsed
                save_checkpoint(epoch, batch_in_epoch + 1)
                raise KeyboardInterrupt(f"stopped by signal {stop.signal}; checkpoint saved at {checkpoint_path}")
            if budget_seconds is not None and train_seconds + elapsed >= budget_seconds:
                break  # the time budget is spent: evaluate and save what we have
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        clock["train_seconds"] = train_seconds
        if ddp.world_size > 1:
            average_buffers(model, ddp.world_size)
        evaluated = evaluate(ema.module if ema is not None else model, eval_set, device, ddp_world=ddp.world_size,
                             rank=ddp.rank, batch_size=max(per_rank_batch, 256), workers=workers)
        is_best = evaluated["top1"] > best_top1
        best_top1 = max(best_top1, evaluated["top1"])
        result = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(seen, 1),
                  "train_top1": 100 * correct / max(seen, 1), "images_per_sec": seen * ddp.world_size / epoch_seconds,
                  "train_seconds": round(train_seconds, 1), "skipped_images": skipped,
                  "lr": scheduler.get_last_lr()[0], "world_size": ddp.world_size,
                  **{f"eval_{k}": v for k, v in evaluated.items() if k != "per_class"}}
        if ddp.world_size > 1:
            result["ranks_in_sync"] = ranks_in_sync(model)
            if not result["ranks_in_sync"]:
                raise RuntimeError(f"the {ddp.world_size} processes hold different weights after epoch {epoch + 1}")
        if ddp.main:
            append_metrics(metrics_path, result)
            if board is not None:
                for key, value in result.items():
                    if isinstance(value, (int, float)) and key not in ("epoch", "world_size"):
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
            trained = ema.module if ema is not None else model
            source = f"shufflenet train {config.model} on {spec.name}, epoch {epoch + 1}"
            save_weights(trained, run_dir / "last.safetensors", spec.preprocessing(), source, spec.class_names)
            if is_best:
                save_weights(trained, run_dir / "best.safetensors", spec.preprocessing(), source, spec.class_names)
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {result['train_loss']:.4f}, "
                       f"eval top-1 {evaluated['top1']:.2f}% (best {best_top1:.2f}%), "
                       f"{result['images_per_sec']:.0f} img/s, {train_seconds / 60:.1f} min of training")
        save_checkpoint(epoch + 1, 0)
    if ddp.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {**result, "run_dir": str(run_dir), "best_weights": str(run_dir / "best.safetensors"),
            "last_weights": str(run_dir / "last.safetensors"), "best_top1": best_top1}


def tensorboard_writer(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter for the run folder when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def keep_metrics_up_to(path: Path, epochs_done: int) -> None:
    """On resume, drop metric lines of epochs after the checkpoint (they will be trained again)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] <= epochs_done]
    write_atomically(path, "".join(row + "\n" for row in rows).encode())
