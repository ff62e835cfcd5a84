"""Running a grid of cells: every cell an ordinary training run through the same trainer, at one number of
epochs for the whole grid; finished cells are skipped, unfinished ones resume from their training state, and
each finished cell leaves a JSON result (configuration, MFLOPs, parameters, final-epoch errors, time, machine,
where it ran).

This module holds what a cell is and what a grid keeps on disk: the cell results (``results/NAME.json``), the
error of a cell that failed (``results/failed/NAME.json``, until it succeeds), and one lock per cell
(``results/.locks/NAME.lock``, held by the driver that trains the cell, so that two drivers on the same output
never train the same cell at once and ``--list`` can tell a running cell). ``Grid.run`` trains the cells one at a
time in this process; ``cluster.run_on_ray`` runs them as Ray tasks.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm import tqdm

from ..data.sources import CIFAR_STATS
from ..engine.config import TrainConfig
from ..engine.trainer import STATE_FILE, TrainingStopped, train
from ..errors import first_line
from ..io.atomic import write_atomically
from ..io.results import write_result
from ..models.complexity import count_params, profile
from ..models.registry import build_model
from .tables import Row

CIFAR10_HELP = ("the paper's experiments train on CIFAR-10: give --data-dir, the folder holding "
                "cifar-10-batches-py (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or --download on a "
                "machine with a network)")
TRAIN_IMAGES = 50_000  # CIFAR-10 and CIFAR-100 alike
# Seconds per training image on 2 cores: a + b x MFLOPs at 32x32, fitted to the grid's models on this project's
# CPU (within a factor of 2 per model: grouped convolutions are slower than their MFLOPs say, VGG faster); the
# estimate is rescaled by what the finished cells of the grid actually took.
SECONDS_PER_IMAGE = (1.1e-3, 1.5e-4)
FAILED = "failed"  # under the results folder: a failed cell's error
LOCKS = ".locks"  # under the results folder: a cell's lock
STATES = ("done", "running", "failed", "partial", "pending")


@dataclass(frozen=True)
class Cell:
    """A row's model trained with one seed for ``epochs`` epochs."""

    key: str
    model: str
    model_args: str | None
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.key}-e{self.epochs}-s{self.seed}"


def cells_of(rows: Iterable[Row], seeds: int, epochs: int) -> list[Cell]:
    """The distinct cells of ``rows`` (a model shared by several tables is trained once)."""
    unique = {row.key: row for row in rows}
    return [Cell(key, row.model, row.model_args, seed, epochs) for key, row in unique.items() for seed in range(seeds)]


@dataclass
class Grid:
    """Where a grid keeps its run folders (``runs``) and its cell results (``results``), and how it trains."""

    data: str
    data_dir: str
    results: Path
    runs: Path
    threads: int | None = None  # per cell; None: torch's default (all cores) in-process, 1 CPU in a Ray task
    check_md5: bool = True
    max_steps: int | None = None  # per epoch: for smoke tests of the grid itself
    compile: bool = False  # torch.compile every cell's model (benchmarks/grid_throughput.py measures the gain)

    def config(self, cell: Cell, device: str | None = None) -> TrainConfig:
        """``device``: None picks CUDA when a GPU is visible, else the CPU; on CUDA the trainer uses AMP (bf16)
        and channels_last."""
        return TrainConfig(model=cell.model, model_args=cell.model_args, data=self.data, data_dir=self.data_dir,
                           check_md5=self.check_md5, epochs=cell.epochs, seed=cell.seed, output=str(self.runs),
                           name=cell.name, threads=self.threads, max_steps_per_epoch=self.max_steps,
                           compile=self.compile,
                           device=device, amp=True, channels_last=True)

    def result_path(self, cell: Cell) -> Path:
        return self.results / f"{cell.name}.json"

    def failure_path(self, cell: Cell) -> Path:
        return self.results / FAILED / f"{cell.name}.json"

    def lock_path(self, cell: Cell) -> Path:
        return self.results / LOCKS / f"{cell.name}.lock"

    def epochs_done(self, cell: Cell) -> int:
        metrics = self.runs / cell.name / "metrics.jsonl"
        return len(metrics.read_text().splitlines()) if metrics.is_file() else 0

    def state(self, cell: Cell) -> tuple[str, int]:
        """(one of ``STATES``, epochs done): running while a driver holds the cell's lock; failed while its last
        attempt's error is on record; partial with a training state to resume."""
        if self.result_path(cell).is_file():
            return "done", cell.epochs
        done = self.epochs_done(cell)
        if self.locked_elsewhere(cell):
            return "running", done
        if self.failure_path(cell).is_file():
            return "failed", done
        return ("partial" if (self.runs / cell.name / STATE_FILE).is_file() else "pending"), done

    # --- one lock per cell: an exclusive flock on results/.locks/NAME.lock, held by the driver while the cell
    # trains; the operating system releases it when the driver ends, however it ends ---

    def lock(self, cell: Cell) -> int | None:
        """Take the cell's lock; None when another driver holds it (a ``--list`` probe holds it only for an
        instant, hence the few tries)."""
        path = self.lock_path(cell)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ValueError(f"cannot create the cell lock {path} ({error.strerror}); choose a writable "
                             f"--output") from None
        for _ in range(5):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                time.sleep(0.05)
        os.close(handle)
        return None

    @staticmethod
    def unlock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)

    def locked_elsewhere(self, cell: Cell) -> bool:
        """Whether a driver (another one, or this one's other lock handle) holds the cell's lock."""
        try:
            handle = os.open(self.lock_path(cell), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(handle)

    # --- training ---

    def seconds_left(self, cells: list[Cell]) -> dict[str, float]:
        """Estimated training seconds left per cell: what the finished cells of the same row and epochs took
        (another seed), else its MFLOPs rescaled by what all the finished cells took."""

        def predicted(cell: Cell) -> float:
            try:
                mflops = cell_mflops(cell, 32)
            except ValueError:  # a cell that cannot be built: it fails on its own when it runs, and says why
                return 0.0
            return cell.epochs * TRAIN_IMAGES * (SECONDS_PER_IMAGE[0] + SECONDS_PER_IMAGE[1] * mflops)

        finished = [(cell, json.loads(self.result_path(cell).read_text())) for cell in cells
                    if self.result_path(cell).is_file()]
        scale = (sum(r["train_seconds"] for _, r in finished) / sum(predicted(c) for c, _ in finished)
                 if finished else 1.0)
        taken: dict[tuple[str, int], list[float]] = {}
        for cell, record in finished:
            taken.setdefault((cell.key, cell.epochs), []).append(record["train_seconds"])
        left = {}
        for cell in cells:
            state, done = self.state(cell)
            seen = taken.get((cell.key, cell.epochs))
            whole = sum(seen) / len(seen) if seen else scale * predicted(cell)
            left[cell.name] = 0.0 if state == "done" else whole * (1 - done / cell.epochs)
        return left

    def todo(self, cells: list[Cell]) -> list[Cell]:
        """The cells without a result (failed ones are tried again), the longest first: with several cells at
        once the last one to start is then a short one, and no core idles long at the end."""
        left = self.seconds_left(cells)
        return sorted((cell for cell in cells if not self.result_path(cell).is_file()), key=lambda c: -left[c.name])

    def train_cell(self, cell: Cell, device: str | None = None) -> dict[str, Any]:
        """Train one cell in this process (the driver's, or a Ray worker's): resume its training state when it
        has one, else start afresh (replacing what a run that never saved a state left)."""
        partial = (self.runs / cell.name / STATE_FILE).is_file()
        return train(self.config(cell, device), resume="auto" if partial else None, overwrite=not partial)

    def placement(self, cell: Cell, device: str | None, **more: Any) -> dict[str, Any]:
        """Where and how a cell is about to train, recorded in its result."""
        partial = (self.runs / cell.name / STATE_FILE).is_file()
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": device or "auto",
                "threads": self.threads, "resumed_from_epoch": self.epochs_done(cell) if partial else None,
                "started": time.time(), **more}

    def ends_in_time(self, cell: Cell, left: dict[str, float], deadline: float | None) -> bool:
        """Whether ``cell`` is estimated (``left``: ``seconds_left``) to end before ``deadline`` (a ``time.time()``;
        None: no deadline)."""
        return deadline is None or time.time() + left[cell.name] <= deadline

    def run(self, cells: list[Cell], progress: bool = True, deadline: float | None = None) -> list[dict[str, Any]]:
        """Train every cell that has no result yet, one at a time in this process (resuming a partial one),
        writing each result as it ends; a cell that fails is recorded and the others go on. With a ``deadline``
        a cell starts only when it is estimated to end before it; the others wait for the next run."""
        self.results.mkdir(parents=True, exist_ok=True)
        records = []
        left = self.seconds_left(cells) if deadline is not None else {}
        for cell in tqdm(self.todo(cells), desc="grid", unit="cell", disable=not progress):
            if not self.ends_in_time(cell, left, deadline):
                continue
            handle = self.lock(cell)
            if handle is None:
                tqdm.write(f"cell {cell.name}: trained by another driver right now; skipped")
                continue
            try:
                if self.result_path(cell).is_file():  # finished by another driver meanwhile
                    continue
                tqdm.write(f"cell {cell.name}")
                placement = self.placement(cell, None)
                try:
                    result = self.train_cell(cell)
                except TrainingStopped:
                    raise
                except Exception as error:  # diverged, bad arguments, unreadable data: this cell's own failure
                    self.record_failure(cell, error, traceback.format_exc())
                    continue
                records.append(self.write_cell(cell, result, time.time() - placement["started"], placement))
                left = self.seconds_left(cells) if deadline is not None else {}  # relearned from the cell just finished
            finally:
                self.unlock(handle)
        return records

    def write_cell(self, cell: Cell, result: dict[str, Any], wall_seconds: float,
                   placement: dict[str, Any] | None = None) -> dict[str, Any]:
        """The cell's result file, written atomically; a failure on record for it is removed."""
        config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
        figures = {
            "cell": asdict(cell), "config": config, "params": cell_params(cell),
            "mflops_224": round(cell_mflops(cell, 224), 3), "mflops_trained": round(cell_mflops(cell, 32), 3),
            "trained_resolution": 32, "top1_err": result["eval_top1_err"], "top5_err": result["eval_top5_err"],
            "top1": result["eval_top1"], "train_seconds": result["train_seconds"],
            "images_per_sec": result["images_per_sec"], "wall_seconds_this_sitting": round(wall_seconds, 1),
            "final_epoch": result["epoch"], "placement": placement,
        }
        record = write_result(self.result_path(cell), figures, self.cell_command(cell, config))
        self.failure_path(cell).unlink(missing_ok=True)
        return record

    def cell_command(self, cell: Cell, config: dict[str, Any]) -> str:
        """A ``shufflenet train`` command that trains the cell as the grid did (``--overwrite`` to replace the
        grid's run folder)."""
        argv = ["shufflenet", "train", cell.model, "--data", self.data, "--data-dir", self.data_dir]
        argv += [] if self.check_md5 else ["--no-md5-check"]
        argv += ["--model-args", cell.model_args] if cell.model_args else []
        argv += ["--epochs", str(cell.epochs), "--seed", str(cell.seed), "--output", str(self.runs), "--name",
                 cell.name]
        argv += ["--max-steps-per-epoch", str(self.max_steps)] if self.max_steps else []
        argv += ["--threads", str(config["threads"])] if config.get("threads") else []
        argv += ["--compile"] if config.get("compile") else []
        argv += ["--device", config["device"]] if config.get("device") else []
        return f"shufflenet reproduce (cell {cell.name}): {shlex.join(argv)}"

    def record_failure(self, cell: Cell, error: BaseException | str, details: str = "") -> dict[str, Any]:
        """A cell's own failure (diverged, bad arguments, its worker lost too often), kept until it succeeds."""
        message = (error.strip().splitlines() or ["unknown error"])[0] if isinstance(error, str) else first_line(error)
        tqdm.write(f"cell {cell.name} failed: {message}")
        record = {"cell": asdict(cell), "error": message, "details": details, "time": time.time(),
                  "epochs_done": self.epochs_done(cell)}
        self.failure_path(cell).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.failure_path(cell), (json.dumps(record, indent=1) + "\n").encode())
        return record

    def failures(self, cells: list[Cell]) -> dict[str, str]:
        """{cell name: error} of the cells whose last attempt failed."""
        return {cell.name: json.loads(self.failure_path(cell).read_text())["error"] for cell in cells
                if self.failure_path(cell).is_file() and not self.result_path(cell).is_file()}


def cell_kwargs(cell: Cell) -> dict[str, Any]:
    return json.loads(cell.model_args) if cell.model_args else {}


def cell_mflops(cell: Cell, resolution: int) -> float:
    """MFLOPs at ``resolution``: the paper's network (1000 classes, standard stem) at 224, the one trained here
    (10 classes, small-input stem) at 32."""
    small = resolution <= 64
    with torch.device("meta"):
        model = build_model(cell.model, 10 if small else 1000, small_input=small, **cell_kwargs(cell))
    return profile(model, resolution).mflops


def cell_params(cell: Cell) -> int:
    with torch.device("meta"):
        return count_params(build_model(cell.model, 10, small_input=True, **cell_kwargs(cell)))


def check_data(data: str, data_dir: str | None) -> None:
    """The grid needs its data set on disk: say where to get it when it is missing."""
    if data not in CIFAR_STATS:
        raise ValueError(f"the reproduction grids train on cifar10 or cifar100, not {data!r}")
    if not data_dir:
        raise ValueError(CIFAR10_HELP)
