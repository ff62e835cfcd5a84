"""Detector training through the same trainer as classification: run folders, training state, resume, time
budget, collective stops, progress and metrics all come from ``engine.trainer.Trainer``; this module gives it
the detection data, the detector, its loss, pycocotools' mAP and the detector weight file."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from ..data.loaders import epoch_order, shard
from ..data.preprocessing import IMAGENET
from ..data.sources import DataSpec
from ..engine.config import TrainConfig, option
from ..engine.trainer import Trainer
from ..io.weight_file import save_weights
from .data import DetectionSet, collate
from .evaluate import evaluate_detector
from .model import backbone_weights_file, build_detector, detector_preprocessing


@dataclass
class DetectConfig(TrainConfig):
    """The training configuration of a detector: ``model`` is the backbone; ``data_dir`` the images folder."""

    data: str = option("voc", "annotation format: voc (a folder of XML files) or coco (a JSON file)",
                       choices=("voc", "coco"))
    recipe: str | None = option(None, "defaults for the unset fields (detection)", choices=("detection",))
    annotations: str | None = option(None, "the annotations: a folder of VOC XML files or a COCO JSON file")
    train_split: str | None = option(None, "training images: a CSV with a filename column, or one name per line")
    test_split: str | None = option(None, "evaluation images, as --train-split")
    classes: str | None = option(None, "class names, comma-separated (default: those the training annotations name)")
    backbone_weights: str | None = option(None, "a classification weight file of ours for the backbone (its "
                                                "classifier is left out)")
    fpn: bool = option(True, "a feature pyramid on strides 8/16/32 (--no-fpn: the paper's single feature map)")
    feature_stride: int = option(16, "with --no-fpn: the map that feeds the detector, stride 16 (Stage 3) or 32",
                                 low=16, high=32)
    min_size: int = option(600, "shorter image side after resizing (the paper's 300x / 600x)", low=32)
    max_size: int = option(1000, "cap on the longer side after resizing", low=32)
    frozen_stages: int = option(1, "backbone feature levels kept frozen (-1: none; 0: the stem)", low=-1, high=3)
    norm_eval: bool = option(True, "keep the backbone's BatchNorm statistics frozen")
    flip: bool = option(True, "random horizontal flips while training")

    def default_recipe(self, spec: DataSpec) -> str:
        return "detection"

    def validate(self) -> None:
        super().validate()
        if self.data_dir is None or self.annotations is None or self.train_split is None:
            raise ValueError("a detector needs --data-dir (the images), --annotations and --train-split")


class DetectionBatches:
    """Batches of (images, targets) for one epoch, in an order that depends only on (seed, epoch), this process's
    share of it under torchrun."""

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


class DetectionTrainer(Trainer):
    SCORE = "map"

    def open_training_set(self, config: DetectConfig) -> tuple[DetectionSet, DataSpec]:
        classes = [c.strip() for c in config.classes.split(",")] if config.classes else None
        dataset = DetectionSet(config.data_dir, config.annotations, config.train_split, classes, flip=config.flip)
        backbone = backbone_weights_file(config.backbone_weights)
        recorded = backbone.preprocessing if backbone is not None and backbone.preprocessing else IMAGENET
        self.backbone_weights = backbone
        mean, std = recorded.mean or (0.0, 0.0, 0.0), recorded.std or (1.0, 1.0, 1.0)
        return dataset, DataSpec("detection", len(dataset.classes), config.min_size, config.min_size, mean, std,
                                 dataset.classes)

    def build_network(self, config: DetectConfig) -> torch.nn.Module:
        return build_detector(config.model, self.spec.num_classes, fpn=config.fpn,
                              feature_stride=config.feature_stride, min_size=config.min_size,
                              max_size=config.max_size, frozen_stages=config.frozen_stages,
                              norm_eval=config.norm_eval, mean=self.spec.mean, std=self.spec.std,
                              backbone_weights=self.backbone_weights)

    def open_data(self) -> None:
        config = self.config
        self.eval_workers = config.workers or 0
        self.train_batches = DetectionBatches(self.train_set, self.per_rank_batch, seed=config.seed,
                                              workers=self.eval_workers, device=self.device,
                                              max_steps=config.max_steps_per_epoch, rank=self.ddp.rank,
                                              world_size=self.ddp.world_size)
        self.eval_set = DetectionSet(config.data_dir, config.annotations, config.test_split or config.train_split,
                                     self.train_set.classes)
        self.total_steps = self.train_batches.steps_per_epoch * config.epochs
        self.warmup_steps = round(config.warmup_epochs * self.train_batches.steps_per_epoch)

    def forward_loss(self, images: list, targets: list) -> tuple[torch.Tensor, int]:
        losses = self.forward(images, targets)
        return sum(losses.values()), 0

    def evaluate(self, tta: bool) -> dict[str, Any]:
        return evaluate_detector(self.trained_model(), self.eval_set, self.device, self.eval_workers)

    def save_weights(self, filename: str, epoch: int) -> None:
        detector = self.trained_model()
        save_weights(detector, self.folder.path / filename, detector_preprocessing(detector),
                     f"shufflenet detect train {self.config.model}, epoch {epoch + 1}", self.spec.class_names,
                     dataset="detection")


def train_detector(config: DetectConfig, resume: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    return DetectionTrainer(config, resume, overwrite).run()
