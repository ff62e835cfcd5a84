"""Cells as Ray tasks: ``shufflenet reproduce`` without options starts a local Ray instance sized to the machine
(no dashboard; shut down when the grid ends, however it ends), or joins a cluster with ``--address``.

The driver (this process) keeps at most ``workers`` cells in flight; each is a task asking Ray for as many CPUs
as its threads (``Grid.threads``) and for ``gpus_per_cell`` of a GPU (0.25: four cells share one). Before it
submits a cell the driver takes the cell's lock (two drivers never train one cell at once) and when the task
returns it writes the cell's result atomically. A task whose worker dies (killed, out of memory, node lost) is
retried by Ray and resumes from the cell's last epoch checkpoint; a cell that fails for a reason of its own
(diverged, bad arguments: the task raised) is recorded as failed and the others go on. Ctrl-C or SIGTERM cancels
the tasks: each cell saves its training state and stops (killed after ``STOP_GRACE_SECONDS``), and no result file
is left half-written. ``workers=0`` trains the cells one at a time in this process, without Ray.

Ray is imported only here, and only when a grid runs on it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..engine.trainer import TrainingStopped
from .grid import Cell, Grid

RETRIES = 3  # a cell whose worker dies is tried this many more times, resuming from its last epoch checkpoint
STOP_GRACE_SECONDS = 60.0  # after Ctrl-C / SIGTERM: how long the cells may take to save their state
DEFAULT_THREADS = 1  # per cell when neither --threads-per-cell nor --workers says: one cell per core trains most
# images per second here, g = 8 cells included (docs/reproduction.md, results/grid_throughput.json)
OBJECT_STORE_BYTES = 100 * 2**20  # a local instance passes only configurations and small results


@dataclass(frozen=True)
class Resources:
    """What one Ray node offers."""

    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Placement:
    """How the cells run: ``workers`` at once, ``threads`` per cell, ``gpus_per_cell`` of a GPU each."""

    workers: int
    threads: int
    gpus_per_cell: float


def local_resources() -> Resources:
    """This machine: its usable cores and the GPUs that torch sees (no Ray needed to know)."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Resources(float(cpus), float(torch.cuda.device_count() if torch.cuda.is_available() else 0))


def placement_for(nodes: list[Resources], workers: int | None, threads: int | None,
                  gpus_per_cell: float | None) -> Placement:
    """Fill the unset options from the nodes: threads ``DEFAULT_THREADS`` (or the cores of a node shared by
    ``workers``), a whole GPU per cell where there are GPUs, and as many cells at once as the nodes hold."""
    largest = max(node.cpus for node in nodes)
    if threads is None:
        threads = max(1, int(largest) // workers) if workers and len(nodes) == 1 else min(DEFAULT_THREADS, int(largest))
    if gpus_per_cell is None:
        gpus_per_cell = 1.0 if any(node.gpus for node in nodes) else 0.0
    if workers is None:
        workers = sum(int(node.cpus // threads) for node in nodes)
        if gpus_per_cell:
            workers = min(workers, sum(int(node.gpus / gpus_per_cell + 1e-9) for node in nodes))
    return Placement(max(1, workers), threads, gpus_per_cell)


def check_resources(nodes: list[Resources], threads: int, gpus_per_cell: float, where: str) -> None:
    """Refuse, in one line, cells that no node can run (Ray would wait for them forever)."""
    if gpus_per_cell and not any(node.gpus >= gpus_per_cell for node in nodes):
        most = max(node.gpus for node in nodes)
        has = "no GPU" if not most else f"at most {most:g} GPU{'s' if most != 1 else ''} on a node"
        raise ValueError(f"--gpus-per-cell {gpus_per_cell:g} asks for GPUs, but {where} has {has}; train on the "
                         f"CPU without --gpus-per-cell, or join a cluster with GPUs with --address")
    if not any(node.cpus >= threads for node in nodes):
        most = max(node.cpus for node in nodes)
        raise ValueError(f"--threads-per-cell {threads} asks for more CPUs than any node of {where} has (at most "
                         f"{most:g}); give --threads-per-cell {int(most)} or less")


def check_options(workers: int | None, gpus_per_cell: float | None, address: str | None) -> None:
    if gpus_per_cell is not None and not 0 <= gpus_per_cell <= 1:
        raise ValueError(f"--gpus-per-cell must be between 0 and 1 (a cell trains on one GPU; 0.25 packs four "
                         f"cells on one), got {gpus_per_cell:g}")
    if workers == 0 and (address or gpus_per_cell):
        raise ValueError("--workers 0 trains the cells one at a time in this process, without Ray: drop --address "
                         "and --gpus-per-cell, or give --workers N")


def run_grid(grid: Grid, cells: list[Cell], *, workers: int | None = None, gpus_per_cell: float | None = None,
             address: str | None = None, progress: bool = True,
             time_limit: float | None = None) -> list[dict[str, Any]]:
    """Train the cells that have no result: on Ray (a local instance, or the cluster at ``address``), or with
    ``workers=0`` one at a time in this process. With ``time_limit`` (minutes) a cell starts only when it is
    estimated to end within the limit, so that the grid stops by itself with no cell half-trained. Returns the
    records written."""
    check_options(workers, gpus_per_cell, address)
    deadline = time.time() + 60 * time_limit if time_limit is not None else None
    if workers == 0:
        return grid.run(cells, progress, deadline)
    if not grid.todo(cells):
        return []
    return RayRunner(grid, address, progress).run(cells, workers, gpus_per_cell, deadline)


class RayRunner:
    """One grid on Ray: start (or join) Ray, place and check the cells, run the cells, shut down what it started."""

    def __init__(self, grid: Grid, address: str | None, progress: bool) -> None:
        self.grid, self.address, self.progress = grid, address, progress
        if address:  # every node reads and writes the same folders: give them as absolute paths
            self.grid = replace(grid, results=grid.results.resolve(), runs=grid.runs.resolve(),
                                data_dir=os.path.abspath(grid.data_dir))

    def run(self, cells: list[Cell], workers: int | None, gpus_per_cell: float | None,
            deadline: float | None = None) -> list[dict[str, Any]]:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        started_here = False
        if ray.is_initialized():  # an instance this process already runs (tests share one)
            nodes, where = cluster_nodes(ray), "the running Ray instance"
        elif self.address:
            check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(f"cannot join the Ray cluster at {self.address} ({first}); start it with `ray start "
                                 f"--head` on its head node, or give that node's address") from None
            started_here = True
            nodes, where = cluster_nodes(ray), f"the Ray cluster at {self.address}"
        else:  # sized to this machine, checked before Ray starts
            nodes, where = [local_resources()], "this machine"
        try:
            placement = placement_for(nodes, workers, self.grid.threads, gpus_per_cell)
            self.grid = replace(self.grid, threads=placement.threads)
            check_resources(nodes, placement.threads, placement.gpus_per_cell, where)
            if not ray.is_initialized():
                ray.init(num_cpus=int(max(nodes[0].cpus, placement.workers * placement.threads)),
                         num_gpus=int(nodes[0].gpus), include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, object_store_memory=OBJECT_STORE_BYTES)
                started_here = True
            if self.address:
                check_shared_storage(ray, self.grid)
            return self.drive(ray, cells, placement, deadline)
        finally:
            if started_here:
                ray.shutdown()

    def drive(self, ray: Any, cells: list[Cell], placement: Placement,
              deadline: float | None) -> list[dict[str, Any]]:
        """Keep ``placement.workers`` cells in flight until every cell is done, failed, held by another driver or
        (with a ``deadline``) estimated to end too late to start."""
        grid, records, skipped = self.grid, [], []
        task = ray.remote(cell_task)
        waiting: list[Cell] = grid.todo(cells)
        left = grid.seconds_left(cells) if deadline is not None else {}
        flight: dict[Any, tuple[Cell, int, float]] = {}
        bar = tqdm(total=len(waiting), desc="grid", unit="cell", disable=not self.progress)
        gpu = f" and {placement.gpus_per_cell:g} GPU" if placement.gpus_per_cell else ""
        tqdm.write(f"grid: {len(waiting)} cells on Ray, {placement.workers} at once, each with "
                   f"{placement.threads} thread{'s' if placement.threads > 1 else ''}{gpu}")
        with stop_on_sigterm():
            try:
                while waiting or flight:
                    while len(flight) < placement.workers:
                        cell = next((c for c in waiting if grid.ends_in_time(c, left, deadline)), None)
                        if cell is None:
                            break
                        waiting.remove(cell)
                        handle = grid.lock(cell)
                        if handle is None:
                            skipped.append(cell.name)
                            bar.update()
                            continue
                        if grid.result_path(cell).is_file():  # finished by another driver meanwhile
                            grid.unlock(handle)
                            bar.update()
                            continue
                        ref = task.options(num_cpus=placement.threads, num_gpus=placement.gpus_per_cell,
                                           max_retries=RETRIES, retry_exceptions=False,
                                           name=f"cell {cell.name}").remote(grid, cell)
                        flight[ref] = (cell, handle, time.time())
                    if not flight:  # the cells still waiting would end past the deadline
                        break
                    ready, _ = ray.wait(list(flight), num_returns=1, timeout=1.0)  # short: signals get through
                    for ref in ready:
                        record = self.collect(ray, ref, *flight.pop(ref))
                        records += [record] if record else []
                        bar.update()
                        if record and deadline is not None:
                            left = grid.seconds_left(cells)  # relearned from the cell just finished
            except KeyboardInterrupt:
                killed = self.stop(ray, flight)
                raise KeyboardInterrupt(f"stopped; {killed} cells killed (they resume from their last epoch), the "
                                        f"others saved their training state" if killed else
                                        "stopped; every cell in flight saved its training state") from None
            finally:
                for _, handle, _ in flight.values():
                    grid.unlock(handle)
                bar.close()
        if skipped:
            tqdm.write(f"{len(skipped)} cells were being trained by another driver and were left to it: "
                       f"{', '.join(skipped)}")
        return records

    def collect(self, ray: Any, ref: Any, cell: Cell, handle: int, started: float,
                stopping: bool = False) -> dict[str, Any] | None:
        """A task that returned: the cell's result written, or its failure recorded."""
        from ray import exceptions as ray_errors

        grid = self.grid
        try:
            out = ray.get(ref)
            record = grid.write_cell(cell, out["result"], time.time() - started, out["placement"])
            tqdm.write(f"cell {cell.name}: top-1 err {record['top1_err']:.2f}% ({record['train_seconds']:.0f} s "
                       f"on {out['placement']['host']}, {out['placement']['device']})")
            return record
        except ray_errors.TaskCancelledError:
            return None
        except ray_errors.RayTaskError as error:  # the cell's own exception, raised in the task
            cause = error.cause
            if isinstance(cause, (TrainingStopped, KeyboardInterrupt)) or stopping:
                return None  # stopped: its training state is saved, the next run resumes it
            grid.record_failure(cell, cause if cause is not None else str(error), str(error))
        except ray_errors.RayError as error:  # the worker or its node lost more often than the retries allow
            if not stopping:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                lost = isinstance(error, (ray_errors.WorkerCrashedError, ray_errors.NodeDiedError,
                                         ray_errors.OutOfMemoryError, ray_errors.ObjectLostError))
                grid.record_failure(cell, (f"its worker was lost {RETRIES + 1} times: " if lost else "")
                                    + f"{type(error).__name__}: {first}", str(error))
        finally:
            grid.unlock(handle)
        return None

    def stop(self, ray: Any, flight: dict[Any, tuple[Cell, int, float]]) -> int:
        """Ask every task in flight to stop (a SIGINT in its worker: the trainer saves its state and raises
        TrainingStopped), wait up to ``STOP_GRACE_SECONDS`` (a second Ctrl-C: not at all), then kill the rest;
        returns how many were killed."""
        if not flight:
            return 0
        tqdm.write(f"stopping {len(flight)} cells: each saves its training state (Ctrl-C again: kill them now)")
        for ref in flight:
            ray.cancel(ref, force=False)
        deadline = time.time() + STOP_GRACE_SECONDS
        try:
            while flight and time.time() < deadline:
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    self.collect(ray, ref, *flight.pop(ref), stopping=True)
        except KeyboardInterrupt:
            pass
        for ref in flight:
            ray.cancel(ref, force=True)
        return len(flight)


def cell_task(grid: Grid, cell: Cell) -> dict[str, Any]:
    """A cell in a Ray worker: on the GPU Ray gave it (CUDA, AMP in bf16, channels_last), else on the CPU with
    the threads it asked for; returns the trainer's result and where it ran."""
    import ray
    import torch

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    placement = grid.placement(cell, device, node=ray.get_runtime_context().get_node_id(), gpu_ids=gpu_ids,
                               cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    if gpu_ids and device == "cpu":
        placement["note"] = (f"Ray gave this cell GPU {','.join(gpu_ids)} but torch sees no CUDA device here "
                             f"(a GPU resource declared on a machine without one): trained on the CPU")
    result = grid.train_cell(cell, device)
    placement["ended"] = time.time()
    return {"result": result, "placement": placement}


def cluster_nodes(ray: Any) -> list[Resources]:
    nodes = [Resources(node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
             for node in ray.nodes() if node.get("Alive")]
    return nodes or [Resources(0.0)]


def check_reachable(address: str) -> None:
    """A HOST:PORT address where nothing listens is refused in seconds (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., or an address Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise ValueError(f"nothing answers at --address {address} ({error.strerror or error}); start the cluster with "
                         f"`ray start --head` on its head node, or give that node's HOST:PORT") from None


def check_shared_storage(ray: Any, grid: Grid) -> None:
    """On a cluster every node must see the run folders, the results and the data at the same paths: a file
    written here must be there on every node. One line naming the first node that does not see it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = f".visible-{uuid.uuid4().hex}"
    written = []
    try:
        for folder in (grid.runs, grid.results):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / token).write_text("")
            written.append(folder / token)
        probe = ray.remote(sees)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"],
                                                                                           soft=False))
                .remote([str(path) for path in written], grid.data_dir) for node in nodes]
        for node, missing in zip(nodes, ray.get(refs, timeout=300)):
            if missing:
                raise ValueError(f"node {node.get('NodeManagerAddress', node['NodeID'])} does not see {missing}: with "
                                 f"--address the runs (--runs), results (--output) and data (--data-dir) must be on "
                                 f"storage that every node mounts at the same path")
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def sees(paths: list[str], data_dir: str) -> str | None:
    """On one node: the first of ``paths`` (and the data folder) that it cannot see, or None."""
    for path in paths:
        if not Path(path).exists():
            return str(Path(path).parent)
    return None if Path(data_dir).is_dir() else data_dir


class stop_on_sigterm:
    """SIGTERM becomes a KeyboardInterrupt while the grid runs (in the main thread), so that ``kill`` stops the
    cells as Ctrl-C does; the previous handler comes back after."""

    def __enter__(self) -> stop_on_sigterm:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self.interrupt)
        return self

    @staticmethod
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated")

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
