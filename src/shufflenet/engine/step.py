"""One optimiser step, as a plain function: the trainer, the grid's cells and the step benchmark all call it."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

# A task's loss: (network, batch) -> (mean loss, right answers, samples); see ``engine.task``.
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, int, int]]


def train_step(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    lr: float,
    scaler: torch.amp.GradScaler | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, int, int]:
    """Forward ``batch`` through ``model`` under ``loss_fn`` (in ``amp_dtype`` autocast when given), backward,
    one update of ``optimizer`` at learning rate ``lr`` (through ``scaler`` for float16), then the ``ema`` of the
    weights. Returns the detached loss, the right answers and the samples of the batch. A non-finite loss is
    not checked here: the caller decides (with the other processes) whether to stop."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss, hits, samples = loss_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
    return loss.detach(), hits, samples
