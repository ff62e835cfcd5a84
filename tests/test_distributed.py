"""Two gloo processes against one: the same update from the same global batch, and BN statistics averaged as
documented (docs/training.md)."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from shufflenet import create_model
from shufflenet.data.loaders import shard
from shufflenet.engine.distributed import Distributed, average_buffers

BATCH, STEPS = 8, 3  # global batch and optimiser steps


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH * STEPS, 3, 32, 32, generator=generator), torch.randint(0, 10, (BATCH * STEPS,),
                                                                                        generator=generator)


def model(norm_eval: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("shufflenet_v1_x0_25_g8", num_classes=10, small_input=True, norm_eval=norm_eval,
                        zero_init_last=False)


def sgd_steps(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, rank: int, world: int,
              steps: int) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        index = shard(torch.arange(step * BATCH, (step + 1) * BATCH), rank, world)
        loss = F.cross_entropy(net(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def worker(rank: int, world: int, init_file: str, out: str, norm_eval: bool, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    local = model(norm_eval)
    net = torch.nn.parallel.DistributedDataParallel(local)
    images, labels = data()
    sgd_steps(net.train(), images, labels, rank, world, steps)
    average_buffers(local, Distributed(rank, world))
    if rank == 0:
        torch.save(local.state_dict(), out)
    dist.destroy_process_group()


def two_processes(tmp_path, norm_eval: bool, steps: int) -> dict[str, torch.Tensor]:
    out = str(tmp_path / "ddp.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(2, str(tmp_path / "init"), out, norm_eval, steps), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_processes_with_frozen_bn_make_the_update_of_one_process(tmp_path):
    ddp = two_processes(tmp_path, norm_eval=True, steps=STEPS)
    single = model(norm_eval=True).train()
    images, labels = data()
    sgd_steps(single, images, labels, 0, 1, STEPS)
    expected, initial = single.state_dict(), model(norm_eval=True).state_dict()
    assert all(torch.allclose(ddp[key].float(), expected[key].float(), atol=2e-5, rtol=1e-4) for key in expected)
    assert any(not torch.equal(initial[key], expected[key]) for key in expected)  # the steps did change weights


def test_bn_running_statistics_are_the_mean_over_the_processes(tmp_path):
    """Documented (docs/training.md): each process updates BN statistics on its own share of the batch, and at the
    end of an epoch they are averaged over the processes. One step: the mean of two single-process updates."""
    ddp = two_processes(tmp_path, norm_eval=False, steps=1)
    images, _ = data()
    halves = []
    for rank in range(2):
        replica = model(norm_eval=False).train()
        with torch.no_grad():
            replica(images[shard(torch.arange(BATCH), rank, 2)])
        halves.append(replica.state_dict())
    statistics = [key for key in ddp if key.endswith(("running_mean", "running_var"))]
    assert statistics and any(not torch.allclose(halves[0][key], halves[1][key]) for key in statistics)
    for key in statistics:
        torch.testing.assert_close(ddp[key], (halves[0][key] + halves[1][key]) / 2, atol=1e-5, rtol=1e-4)
