"""What the training loop is given: a task (its data, its network, its loss, its evaluation, what it saves).

The loop (``engine.trainer``) knows nothing of images, labels or boxes: it asks the task. Classification is
the task here; detection (``detection.task``) is the other. A task is opened in two steps because the run's
configuration is resolved from the data (a recipe for 32x32 images, say): ``open_training_set(config)`` gives the
training set and its spec, then ``Task(config, train_set, spec)`` is the task for the resolved configuration.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loaders import FileBatches, TensorBatches
from ..data.sources import DataSpec, TensorImages, batches, open_dataset, train_transform
from ..factory import create_model, model_runner
from ..io.weight_file import save_weights
from .config import Config, TrainConfig
from .distributed import Distributed
from .evaluate import evaluate


class Batches(Protocol):
    """One epoch of batches at a time, replayable from (seed, epoch) for an exact resume."""

    steps_per_epoch: int

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Any]: ...


class Task(Protocol):
    score: str  # the evaluation figure that picks the best epoch ("top1", "map")
    spec: DataSpec

    def network(self) -> nn.Module: ...

    def batches(self, batch_size: int, device: torch.device, ddp: Distributed) -> Batches: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int, int]: ...

    def evaluate(self, model: nn.Module, device: torch.device, ddp: Distributed, last: bool) -> dict[str, Any]: ...

    def save_weights(self, model: nn.Module, path: Any, epoch: int) -> None: ...


def loader_workers(config: Config, files: bool) -> int:
    """Data loader processes: as configured, else min(8, cores) to decode image ``files``, none otherwise."""
    if config.workers is not None:
        return config.workers
    return min(8, torch.multiprocessing.cpu_count()) if files else 0


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, int],
                        label_smoothing: float = 0.0) -> tuple[torch.Tensor, int, int]:
    """Label-smoothed cross-entropy of a batch (images, labels, skipped), its right answers and its size."""
    images, labels, _ = batch
    logits = model(images)
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return loss, int((logits.detach().argmax(1) == labels).sum()), len(labels)


class ClassificationTask:
    """Image classification on a named data set: cross-entropy (label-smoothed), top-1 / top-5."""

    score = "top1"

    @staticmethod
    def open_training_set(config: TrainConfig) -> tuple[Any, DataSpec]:
        return open_dataset(config.data, "train", config.data_dir, download=config.download,
                            check_md5=config.check_md5)

    def __init__(self, config: TrainConfig, train_set: Any, spec: DataSpec) -> None:
        self.config, self.train_set, self.spec = config, train_set, spec
        self.in_memory = isinstance(train_set, TensorImages)

    def network(self) -> nn.Module:
        config = self.config
        kwargs: dict[str, Any] = {"small_input": config.small_input} if config.small_input else {}
        kwargs.update(config.model_kwargs())
        if config.drop_rate is not None:
            kwargs["drop_rate"] = config.drop_rate
        return create_model(config.model, num_classes=self.spec.num_classes, **kwargs)

    def batches(self, batch_size: int, device: torch.device, ddp: Distributed) -> Batches:
        config, spec = self.config, self.spec
        common = dict(seed=config.seed, rank=ddp.rank, world_size=ddp.world_size, device=device,
                      channels_last=config.channels_last, max_steps=config.max_steps_per_epoch)
        if self.in_memory:
            return TensorBatches(self.train_set, spec.mean, spec.std, batch_size, flip=spec.name != "digits",
                                 **common)
        self.train_set.transform = train_transform(spec)
        return FileBatches(self.train_set, batch_size, workers=loader_workers(config, files=True), **common)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, int]) -> tuple[torch.Tensor, int, int]:
        return classification_loss(model, batch, self.config.label_smoothing)

    def evaluate(self, model: nn.Module, device: torch.device, ddp: Distributed, last: bool) -> dict[str, Any]:
        """Top-1 / top-5 on the test split, shared by the processes; after the ``last`` epoch with ``tta`` also
        of each image and its mirror image (``tta_top1``, ``tta_top5``)."""
        config, eval_set = self.config, self.eval_set
        indices = range(ddp.rank, len(eval_set), ddp.world_size)
        amp = config.amp and device.type == "cuda"
        scores = {}
        for tta in (False, True) if last and config.tta else (False,):
            runner = model_runner(model, device, channels_last=config.channels_last, tta=tta, amp=amp)
            batch_size = max(config.batch_size // ddp.world_size, 256)
            found = evaluate(runner, batches(eval_set, batch_size, indices=indices,
                                             workers=loader_workers(config, files=not self.in_memory)), ddp=ddp)
            scores.update({f"tta_{k}": v for k, v in found.items() if k in ("top1", "top5")} if tta else found)
        return scores

    @cached_property
    def eval_set(self) -> Any:
        config = self.config
        return open_dataset(config.data, "test", config.data_dir, check_md5=config.check_md5,
                            transform=self.spec.preprocessing().transform())[0]

    def save_weights(self, model: nn.Module, path: Any, epoch: int) -> None:
        spec = self.spec
        source = f"shufflenet train {self.config.model} on {spec.name}, epoch {epoch + 1}"
        save_weights(model, path, preprocessing=spec.preprocessing(), class_names=spec.class_names,
                     dataset=spec.name, source=source)
