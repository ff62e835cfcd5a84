"""Many processes (``torchrun``): joining the group, agreeing on decisions, averaging BN statistics, checking
that every process holds the same weights. With one process every function is a no-op or the identity."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None) -> tuple[Distributed, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPU, gloo on CPU).
    ``device``: "cpu" or "cuda"; None picks CUDA when a GPU is visible."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but this process sees no GPU; drop --device or use --device cpu")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Distributed(), torch.device("cuda" if use_cuda else "cpu")
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, local_rank), device


def all_max(values: list[float], ddp: Distributed, device: torch.device) -> list[float]:
    """The element-wise maximum of ``values`` over the processes: every process gets the same answer, so a
    decision taken on it (stop now, the clock says X) is taken by all of them at the same step."""
    if not ddp.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def average_buffers(model: torch.nn.Module, ddp: Distributed) -> None:
    """Average the BN running statistics over the processes (each updated them on its own batches); integer
    buffers (BN's batch counters) take rank 0's value."""
    if not ddp.active:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= ddp.world_size
        else:
            dist.broadcast(buffer, 0)


def ranks_in_sync(model: torch.nn.Module, ddp: Distributed) -> bool:
    """Whether every process holds exactly rank 0's parameters and buffers (DDP's promise, checked)."""
    if not ddp.active:
        return True
    flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return difference.item() == 0.0


def gather_objects(value: object, ddp: Distributed) -> list[object]:
    """``value`` from every process, in rank order."""
    if not ddp.active:
        return [value]
    gathered: list[object] = [None] * ddp.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def shutdown(ddp: Distributed) -> None:
    if ddp.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
