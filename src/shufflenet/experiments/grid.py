"""Running a grid of cells: every cell an ordinary training run through the same trainer, at one number of
epochs for the whole grid; finished cells are skipped, unfinished ones resume from their training state, and
each finished cell leaves a JSON result (configuration, MFLOPs, parameters, final-epoch errors, time, machine).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm import tqdm

from ..data.sources import CIFAR_STATS
from ..engine.config import TrainConfig
from ..engine.trainer import STATE_FILE, train
from ..io.results import write_result
from ..models.complexity import profile
from ..models.registry import build_model
from .tables import Row

CIFAR10_HELP = ("the paper's experiments train on CIFAR-10: give --data-dir, the folder holding "
                "cifar-10-batches-py (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or --download on a "
                "machine with a network)")
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}
# Seconds per training image on 2 cores: a + b x MFLOPs at 32x32, fitted to the grid's models on this project's
# CPU (within a factor of 2 per model: grouped convolutions are slower than their MFLOPs say, VGG faster); the
# estimate is rescaled by what the finished cells of the grid actually took.
SECONDS_PER_IMAGE = (1.1e-3, 1.5e-4)


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
    threads: int | None = None
    check_md5: bool = True
    max_steps: int | None = None  # per epoch: for smoke tests of the grid itself

    def config(self, cell: Cell) -> TrainConfig:
        return TrainConfig(model=cell.model, model_args=cell.model_args, data=self.data, data_dir=self.data_dir,
                           check_md5=self.check_md5, epochs=cell.epochs, seed=cell.seed, output=str(self.runs),
                           name=cell.name, threads=self.threads, max_steps_per_epoch=self.max_steps)

    def result_path(self, cell: Cell) -> Path:
        return self.results / f"{cell.name}.json"

    def state(self, cell: Cell) -> tuple[str, int]:
        """("done" | "partial" | "pending", epochs done)."""
        if self.result_path(cell).is_file():
            return "done", cell.epochs
        metrics = self.runs / cell.name / "metrics.jsonl"
        done = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        return ("partial" if (self.runs / cell.name / STATE_FILE).is_file() else "pending"), done

    def seconds_left(self, cells: list[Cell]) -> dict[str, float]:
        """Estimated training seconds left per cell, from its MFLOPs and what the finished cells took."""
        images = TRAIN_IMAGES.get(self.data, 50_000)

        def predicted(cell: Cell) -> float:
            return cell.epochs * images * (SECONDS_PER_IMAGE[0] + SECONDS_PER_IMAGE[1] * cell_mflops(cell, 32))

        finished = [(cell, json.loads(self.result_path(cell).read_text())) for cell in cells
                    if self.result_path(cell).is_file()]
        scale = (sum(r["train_seconds"] for _, r in finished) / sum(predicted(c) for c, _ in finished)
                 if finished else 1.0)
        left = {}
        for cell in cells:
            state, done = self.state(cell)
            left[cell.name] = 0.0 if state == "done" else scale * predicted(cell) * (1 - done / cell.epochs)
        return left

    def run(self, cells: list[Cell], progress: bool = True) -> list[dict[str, Any]]:
        """Train every cell that has no result yet (resuming a partial one), writing each result as it ends."""
        self.results.mkdir(parents=True, exist_ok=True)
        records = []
        todo = [cell for cell in cells if self.state(cell)[0] != "done"]
        for cell in tqdm(todo, desc="grid", unit="cell", disable=not progress):
            tqdm.write(f"cell {cell.name}")
            partial = (self.runs / cell.name / STATE_FILE).is_file()
            started = time.time()
            result = train(self.config(cell), resume="auto" if partial else None, overwrite=not partial)
            records.append(self.write_cell(cell, result, time.time() - started))
        return records

    def write_cell(self, cell: Cell, result: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
        config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
        figures = {
            "cell": asdict(cell), "config": config, "params": cell_params(cell),
            "mflops_224": round(cell_mflops(cell, 224), 3), "mflops_trained": round(cell_mflops(cell, 32), 3),
            "trained_resolution": 32, "top1_err": result["eval_top1_err"], "top5_err": result["eval_top5_err"],
            "top1": result["eval_top1"], "train_seconds": result["train_seconds"],
            "images_per_sec": result["images_per_sec"], "wall_seconds_this_sitting": round(wall_seconds, 1),
            "final_epoch": result["epoch"],
        }
        command = (f"shufflenet reproduce (cell {cell.name}): shufflenet train {cell.model} --data {self.data} "
                   f"--epochs {cell.epochs} --seed {cell.seed}" + (f" --model-args '{cell.model_args}'"
                                                                   if cell.model_args else ""))
        return write_result(self.result_path(cell), figures, command)


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
        model = build_model(cell.model, 10, small_input=True, **cell_kwargs(cell))
    return sum(p.numel() for p in model.parameters())


def check_data(data: str, data_dir: str | None) -> None:
    """The grid needs its data set on disk: say where to get it when it is missing."""
    if data not in CIFAR_STATS:
        raise ValueError(f"the reproduction grids train on cifar10 or cifar100, not {data!r}")
    if not data_dir:
        raise ValueError(CIFAR10_HELP)
