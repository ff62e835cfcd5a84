"""Evaluation: top-1 / top-5 accuracy (and the papers' error rates), loss, per-class accuracy, images/s."""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data import collate_skipping_unreadable


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    per_class: bool = False,
    ddp_world: int = 1,
    rank: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy of ``model`` (in eval mode) on ``dataset``. With ``ddp_world > 1`` each process takes every
    ``ddp_world``-th sample and the counts are summed over the processes."""
    was_training = model.training
    model.eval()
    indices = list(range(rank, len(dataset), ddp_world))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                        collate_fn=collate_skipping_unreadable)
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last) if any(
        p.ndim == 4 for p in model.parameters()) else False
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    num_classes = None
    totals = torch.zeros(4, dtype=torch.float64)  # images, top-1 hits, top-5 hits, loss sum
    class_hits = class_counts = None
    start = time.perf_counter()
    for images, labels, _ in tqdm(loader, desc="eval", leave=False, disable=not progress):
        if len(labels) == 0:
            continue
        logits = model(images.to(device, memory_format=memory_format)).float().cpu()
        num_classes = logits.shape[1]
        top5 = logits.topk(min(5, num_classes), 1).indices
        hit1 = top5[:, 0] == labels
        totals += torch.tensor([len(labels), hit1.sum().item(), (top5 == labels[:, None]).any(1).sum().item(),
                                F.cross_entropy(logits, labels, reduction="sum").item()], dtype=torch.float64)
        if class_hits is None:
            class_hits = torch.zeros(num_classes, dtype=torch.float64)
            class_counts = torch.zeros(num_classes, dtype=torch.float64)
        class_hits.index_add_(0, labels, hit1.double())
        class_counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
    seconds = time.perf_counter() - start
    if ddp_world > 1:
        packed = torch.cat([totals, class_hits, class_counts]) if class_hits is not None else totals
        dist.all_reduce(packed)
        totals = packed[:4]
        if class_hits is not None:
            class_hits, class_counts = packed[4:].chunk(2)
    model.train(was_training)
    images = int(totals[0])
    if images == 0:
        raise ValueError("the evaluation set has no readable images")
    top1, top5 = 100 * totals[1].item() / images, 100 * totals[2].item() / images
    result: dict[str, Any] = {"top1": top1, "top5": top5, "top1_err": 100 - top1, "top5_err": 100 - top5,
                              "loss": totals[3].item() / images, "images": images,
                              "images_per_sec": images / seconds}
    if per_class:
        result["per_class"] = (100 * class_hits / class_counts.clamp(min=1)).tolist()
    return result
