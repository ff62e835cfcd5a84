"""The learning-rate schedule, as pure functions of where the run stands."""
from __future__ import annotations

import math
from dataclasses import dataclass


def decay(progress: float, schedule: str) -> float:
    """From 1 at progress 0 to 0 at progress 1, linearly or along a half cosine."""
    progress = min(1.0, progress)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then linear or cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return decay((step - warmup_steps) / max(1, total_steps - warmup_steps), schedule)


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run: ``peak`` after ``warmup_steps`` of linear warm-up, then down to 0
    at ``total_steps``. With a ``budget_seconds`` the decay follows the clock instead (the fraction of the budget
    spent stands in for the fraction of steps done) and multiplies the warm-up ramp, so that the rate reaches 0
    when the budget is spent even if that comes inside the warm-up."""

    peak: float
    total_steps: int
    warmup_steps: int
    schedule: str
    budget_seconds: float | None = None

    def lr(self, step: int, train_seconds: float) -> float:
        if self.budget_seconds is None:
            return self.peak * lr_factor(step, self.total_steps, self.warmup_steps, self.schedule)
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return self.peak * ramp * decay(train_seconds / self.budget_seconds, self.schedule)
