"""Training batches, one epoch at a time, replayable from (seed, epoch) so that a resumed run sees exactly the
batches an uninterrupted one would, and split over the processes of a distributed run.

``TensorBatches``: a data set held in memory as one uint8 tensor (digits, CIFAR) is augmented in whole batches
on tensors (full batches only: an epoch leaves out its last, incomplete one), with no per-image Python in the
loop: random crop by zero padding and translation, and horizontal flips (alternating across epochs: an image
flipped in one epoch is not in the next; Jordan's airbench uses the same trick), then normalisation.
``FileBatches``: image files, augmented per image by ``DataLoader`` workers.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .sources import TensorImages, collate_readable

Batch = tuple[torch.Tensor, torch.Tensor, int]  # images, labels, images skipped as unreadable


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A random generator that depends only on (seed, epoch, stream), so that an epoch's draws replay on resume;
    ``stream`` offsets the seed for a second draw of one epoch (the crops, beside the order)."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + stream)


def epoch_order(size: int, epoch: int, seed: int) -> torch.Tensor:
    """A permutation of ``range(size)`` that depends only on (seed, epoch)."""
    return torch.randperm(size, generator=epoch_generator(seed, epoch))


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s share of ``order``: every ``world_size``-th index, the order padded with its own start
    so that every process gets the same count (the shards are disjoint up to that padding and cover ``order``)."""
    per_rank = math.ceil(len(order) / world_size)
    padded = torch.cat([order, order[: per_rank * world_size - len(order)]])
    return padded[rank::world_size]


class TensorBatches:
    """Augmented batches of an in-memory ``TensorImages`` (uint8, N x 3 x H x W), built on ``device``."""

    def __init__(self, dataset: TensorImages, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int, *,
                 seed: int, padding: int = 4, flip: bool = True, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", channels_last: bool = True, max_steps: int | None = None) -> None:
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.batch_size, self.seed, self.padding, self.flip = batch_size, seed, padding, flip
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Whole batches only: a last, smaller batch would make torch.compile recompile the step for dynamic
        # shapes, which runs slower; each epoch's order differs, so every image is still seen.
        steps = max(1, math.ceil(len(self.labels) / world_size) // batch_size)
        self.steps_per_epoch = min(steps, max_steps) if max_steps else steps
        # Each image's flip in even epochs; odd epochs flip the others (alternating flips).
        self.flip_parity = torch.randint(0, 2, (len(self.labels),), generator=torch.Generator().manual_seed(seed),
                                         dtype=torch.bool).to(device)

    def augment(self, index: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop each image of ``index`` from its zero-padded copy at offset ``shifts`` (0..2 x padding in each
        direction), flip where ``flips``, normalise; one gather for the whole batch."""
        images = self.images[index]
        n, channels, height, width = images.shape
        if self.padding:
            padded = torch.nn.functional.pad(images, [self.padding] * 4)
            rows = (shifts[:, 0:1] + torch.arange(height, device=self.device)).view(n, 1, height, 1)
            cols = (shifts[:, 1:2] + torch.arange(width, device=self.device)).view(n, 1, 1, width)
            images = padded[torch.arange(n, device=self.device).view(n, 1, 1, 1),
                            torch.arange(channels, device=self.device).view(1, channels, 1, 1), rows, cols]
        if self.flip:
            images = torch.where(flips.view(n, 1, 1, 1), images.flip(3), images)
        images = (images.float() - self.mean) / self.std
        return images.contiguous(memory_format=self.memory_format)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch ``skip`` on."""
        generator = epoch_generator(self.seed, epoch, stream=1)
        order = shard(epoch_order(len(self.labels), epoch, self.seed), self.rank, self.world_size)
        shifts = torch.randint(0, 2 * self.padding + 1, (len(self.labels), 2), generator=generator).to(self.device)
        flips = self.flip_parity ^ bool(epoch % 2)
        for step in range(skip, self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size].to(self.device)
            yield self.augment(index, shifts[index], flips[index]), self.labels[index], 0


class FileBatches:
    """Batches of a data set whose samples are transformed one by one (image files), through ``DataLoader``
    workers; an unreadable image is skipped and counted."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int, workers: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu", channels_last: bool = True,
                 max_steps: int | None = None) -> None:
        self.dataset, self.batch_size, self.seed, self.workers = dataset, batch_size, seed, workers
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        steps = math.ceil(math.ceil(len(dataset) / world_size) / batch_size)
        self.steps_per_epoch = min(steps, max_steps) if max_steps else steps

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        order = shard(epoch_order(len(self.dataset), epoch, self.seed), self.rank, self.world_size)
        order = order[skip * self.batch_size: self.steps_per_epoch * self.batch_size].tolist()
        # Its own generator (for worker seeds), so that building the loader leaves the global RNG untouched.
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order, num_workers=self.workers,
                            collate_fn=collate_readable, pin_memory=self.device.type == "cuda",
                            generator=epoch_generator(self.seed, epoch))
        for images, labels, skipped in loader:
            yield (images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                   labels.to(self.device, non_blocking=True), skipped)

