"""One evaluation for every model runner: a PyTorch model or an ONNX Runtime session, over batches of images.

A runner maps a batch of preprocessed images to logits. ``evaluate`` scores one runner, or several on the same
images (the first is the reference for top-1 agreement, as when int8 is compared with fp32): top-1 / top-5
accuracy and error, cross-entropy loss, per-class accuracy, images/s. Across the processes of a distributed
run each process scores its share and the counts are summed.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..factory import Runner
from .distributed import Distributed


class Tally:
    """Running counts of one runner: images, top-1 / top-5 hits, loss sum, agreement, per-class hits."""

    def __init__(self) -> None:
        self.counts = torch.zeros(5, dtype=torch.float64)  # images, labelled, top-1, top-5, loss sum
        self.agree = 0.0
        self.class_hits: torch.Tensor | None = None
        self.class_counts: torch.Tensor | None = None

    def add(self, logits: torch.Tensor, labels: torch.Tensor | None, reference: torch.Tensor) -> None:
        predicted = logits.argmax(1)
        self.agree += float((predicted == reference).sum())
        self.counts[0] += len(logits)
        if labels is None:
            return
        top5 = logits.topk(min(5, logits.shape[1]), 1).indices
        hit1 = top5[:, 0] == labels
        self.counts[1:] += torch.tensor([len(labels), hit1.sum().item(), (top5 == labels[:, None]).any(1).sum().item(),
                                         F.cross_entropy(logits, labels, reduction="sum").item()], dtype=torch.float64)
        if self.class_hits is None:
            self.class_hits = torch.zeros(logits.shape[1], dtype=torch.float64)
            self.class_counts = torch.zeros(logits.shape[1], dtype=torch.float64)
        self.class_hits.index_add_(0, labels, hit1.double())
        self.class_counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))

    def reduce(self, ddp: Distributed) -> None:
        """Sum the counts over the processes."""
        if not ddp.active:
            return
        import torch.distributed as dist

        parts = [self.counts, torch.tensor([self.agree], dtype=torch.float64)]
        if self.class_hits is not None:
            parts += [self.class_hits, self.class_counts]
        packed = torch.cat(parts)
        dist.all_reduce(packed)
        self.counts, self.agree = packed[:5], float(packed[5])
        if self.class_hits is not None:
            self.class_hits, self.class_counts = packed[6:].chunk(2)

    def scores(self, seconds: float, per_class: bool) -> dict[str, Any]:
        images, labelled = int(self.counts[0]), int(self.counts[1])
        result: dict[str, Any] = {"images": images, "agreement": 100.0 * self.agree / images,
                                  "images_per_sec": images / max(seconds, 1e-9)}
        if labelled:
            top1, top5 = 100.0 * self.counts[2].item() / labelled, 100.0 * self.counts[3].item() / labelled
            result.update(top1=top1, top5=top5, top1_err=100.0 - top1, top5_err=100.0 - top5,
                          loss=self.counts[4].item() / labelled)
            if per_class:
                result["per_class"] = (100 * self.class_hits / self.class_counts.clamp(min=1)).tolist()
        return result


def evaluate(
    runners: Runner | Mapping[str, Runner],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    per_class: bool = False,
    ddp: Distributed = Distributed(),
    progress: bool = False,
) -> dict[str, Any]:
    """Scores of ``runners`` on ``batches`` of ``(images, labels)`` (labels None: unlabelled, only agreement
    is scored): for one runner its scores, for a mapping ``{name: scores}``. Keys: ``images``, ``agreement``
    (top-1 agreement in % with the first runner), ``images_per_sec`` and, on labelled images, ``top1``,
    ``top5``, ``top1_err``, ``top5_err``, ``loss`` and, with ``per_class``, ``per_class``."""
    named = {"model": runners} if callable(runners) else dict(runners)
    tallies = {name: Tally() for name in named}
    seconds = dict.fromkeys(named, 0.0)
    for images, labels in tqdm(batches, desc="eval", leave=False, disable=not progress):
        reference = None
        for name, run in named.items():
            start = time.perf_counter()
            logits = run(images)
            seconds[name] += time.perf_counter() - start
            reference = logits.argmax(1) if reference is None else reference
            tallies[name].add(logits, None if labels is None else labels.cpu(), reference)
    results = {}
    for name, tally in tallies.items():
        tally.reduce(ddp)
        if tally.counts[0] == 0:
            raise ValueError("no readable images to evaluate")
        results[name] = tally.scores(seconds[name], per_class)
    return results["model"] if callable(runners) else results
