"""Detection as a training task: the same loop as classification (run folders, training state, resume, time
budget, collective stops, progress and metrics: ``engine.trainer``) with the detection data, the detector, its
loss, pycocotools' mAP and the detector weight file."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.loaders import epoch_order, shard
from ..data.preprocessing import IMAGENET
from ..data.sources import DataSpec
from ..engine.distributed import Distributed
from ..engine.task import loader_workers
from ..engine.trainer import train
from ..io.weight_file import save_weights
from .config import DetectConfig
from .data import DetectionSet, collate, find_layout
from .evaluate import evaluate_detector
from .model import backbone_weights_file, build_detector


class DetectionBatches:
    """Batches of (images, targets, 0) for one epoch, in an order that depends only on (seed, epoch), this
    process's share of it under torchrun."""

    def __init__(self, dataset: DetectionSet, batch_size: int, *, seed: int, workers: int, device: torch.device,
                 max_steps: int | None, rank: int = 0, world_size: int = 1) -> None:
        self.dataset, self.batch_size, self.seed, self.workers, self.device = dataset, batch_size, seed, workers, device
        self.rank, self.world_size = rank, world_size
        steps = math.ceil(math.ceil(len(dataset) / world_size) / batch_size)
        self.steps_per_epoch = min(steps, max_steps) if max_steps else steps

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[list, list, int]]:
        order = shard(epoch_order(len(self.dataset), epoch, self.seed), self.rank, self.world_size).tolist()
        order = order[skip * self.batch_size: self.steps_per_epoch * self.batch_size]
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order, num_workers=self.workers,
                            collate_fn=collate)
        for images, targets in loader:
            yield ([image.to(self.device) for image in images],
                   [{key: value.to(self.device) for key, value in target.items()} for target in targets], 0)


class DetectionTask:
    """Faster R-CNN on one of our backbones; the best epoch is picked by mAP@[.5:.95]."""

    score = "map"

    @staticmethod
    def open_training_set(config: DetectConfig) -> tuple[DetectionSet, DataSpec]:
        layout = find_layout(config.data_dir, config.annotations, config.train_split, config.test_split)
        classes = [c.strip() for c in config.classes.split(",")] if config.classes else None
        dataset = DetectionSet(layout.images, layout.annotations, layout.train_split, classes, flip=config.flip)
        backbone = backbone_weights_file(config.backbone_weights)
        recorded = backbone.preprocessing if backbone is not None and backbone.preprocessing else IMAGENET
        mean, std = recorded.mean or (0.0, 0.0, 0.0), recorded.std or (1.0, 1.0, 1.0)
        return dataset, DataSpec("detection", len(dataset.classes), config.min_size, config.min_size, mean, std,
                                 dataset.classes)

    def __init__(self, config: DetectConfig, train_set: DetectionSet, spec: DataSpec) -> None:
        self.config, self.train_set, self.spec = config, train_set, spec
        layout = find_layout(config.data_dir, config.annotations, config.train_split, config.test_split)
        self.eval_set = DetectionSet(layout.images, layout.annotations, layout.test_split or layout.train_split,
                                     train_set.classes)

    def network(self) -> nn.Module:
        config = self.config
        return build_detector(config.model, self.spec.num_classes, fpn=config.fpn,
                              feature_stride=config.feature_stride, min_size=config.min_size,
                              max_size=config.max_size, frozen_stages=config.frozen_stages,
                              norm_eval=config.norm_eval, mean=self.spec.mean, std=self.spec.std,
                              backbone_weights=backbone_weights_file(config.backbone_weights))

    def batches(self, batch_size: int, device: torch.device, ddp: Distributed) -> DetectionBatches:
        return DetectionBatches(self.train_set, batch_size, seed=self.config.seed,
                                workers=loader_workers(self.config, files=False), device=device,
                                max_steps=self.config.max_steps_per_epoch, rank=ddp.rank, world_size=ddp.world_size)

    def loss(self, model: nn.Module, batch: tuple[list, list, int]) -> tuple[torch.Tensor, int, int]:
        images, targets, _ = batch
        losses = model(images, targets)
        return sum(losses.values()), 0, len(images)

    def evaluate(self, model: nn.Module, device: torch.device, ddp: Distributed, last: bool) -> dict[str, Any]:
        return evaluate_detector(model, self.eval_set, device, loader_workers(self.config, files=False))

    def save_weights(self, model: nn.Module, path: Any, epoch: int) -> None:
        save_weights(model, path, source=f"shufflenet detect train {self.config.model}, epoch {epoch + 1}",
                     class_names=self.spec.class_names, dataset="detection")


def train_detector(config: DetectConfig, resume: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    return train(config, resume, overwrite, task_type=DetectionTask)
