"""`shufflenet reproduce` with cells as Ray tasks (``experiments.cluster``): one local Ray instance for the whole
module (started by the ``local_ray`` fixture, with a GPU declared to Ray on a machine without one), fake CIFAR,
tiny cells (``--max-steps-per-epoch``). The tests that need no Ray run first and check that none starts here (one
runs a driver in a process of its own, with a Ray of its own)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import write_fake_cifar

from shufflenet.cli import main
from shufflenet.experiments.cluster import Placement, Resources, check_resources, placement_for, run_grid
from shufflenet.experiments.grid import Cell, Grid

ray = pytest.importorskip("ray")
TINY = "shufflenet_v1_x0_25_g1"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return str(write_fake_cifar(tmp_path_factory.mktemp("cifar")).parent)


@pytest.fixture(scope="module")
def local_ray():
    """4 CPUs and 1 GPU declared to Ray (there is no GPU: the cells train on the CPU and record where they
    would have trained); the test module's classes travel to the workers by value."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=100 * 2**20)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def grid_options(cifar, folder, *more):
    return ["reproduce", "table5", "--data-dir", cifar, "--no-md5-check", "--epochs", "1", "--seeds", "1",
            "--max-steps-per-epoch", "1", "--threads-per-cell", "1", "--no-compile", "--output",
            str(folder / "results"), "--runs", str(folder / "runs"), "--docs", str(folder / "docs"), *more]


def tiny_grid(cls, cifar, folder, **kwargs):
    return cls("cifar10", cifar, folder / "results", folder / "runs", threads=1, check_md5=False, **kwargs)


# --- without Ray ---

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_nobody_has_are_refused_in_one_line_before_ray_starts(cifar, tmp_path, capsys):
    assert main(grid_options(cifar, tmp_path, "--gpus-per-cell", "0.25")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--gpus-per-cell 0.25 asks for GPUs, but this machine has no GPU" in err
    assert not ray.is_initialized() and not list((tmp_path / "results").glob("*.json"))
    with pytest.raises(ValueError, match="has at most 1 GPU on a node"):  # a cluster: what its nodes offer
        check_resources([Resources(8, 1), Resources(8, 0)], 1, 1.5, "the cluster")
    with pytest.raises(ValueError, match="--threads-per-cell 4 or less"):
        check_resources([Resources(4, 0), Resources(2, 0)], 8, 0, "the cluster")
    check_resources([Resources(4, 0), Resources(8, 1)], 8, 0.25, "the cluster")
    # defaults: 1 thread per cell, one cell per core; four cells to a GPU at 0.25; --workers shares a node's cores
    assert placement_for([Resources(16, 1)], None, None, 0.25) == Placement(4, 1, 0.25)
    assert placement_for([Resources(16, 2)], None, None, None) == Placement(2, 1, 1.0)
    assert placement_for([Resources(16, 0)], 4, None, None) == Placement(4, 4, 0.0)
    assert placement_for([Resources(2, 0)], None, None, None) == Placement(2, 1, 0.0)
    assert placement_for([Resources(2, 0), Resources(4, 0)], None, 2, None) == Placement(3, 2, 0.0)


def test_ray_is_imported_only_when_a_grid_runs_on_it():
    code = ("import sys; from shufflenet.cli import build_parser; import shufflenet.experiments.cluster; "
            "build_parser().parse_args(['reproduce', 'table2']); print('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_cell_locked_by_another_driver_is_running_and_left_to_it(cifar, tmp_path, capsys):
    grid = tiny_grid(Grid, cifar, tmp_path, max_steps=1)
    cell = Cell(TINY, TINY, None, 0, 1)
    assert grid.state(cell) == ("pending", 0)
    handle = grid.lock(cell)  # as another driver would hold it
    try:
        assert grid.state(cell)[0] == "running" and grid.lock(cell) is None
        assert grid.run([cell], progress=False) == [] and not grid.result_path(cell).is_file()
    finally:
        grid.unlock(handle)
    assert grid.state(cell) == ("pending", 0)
    assert not ray.is_initialized()


def test_a_cell_is_estimated_from_its_other_seeds_when_they_have_finished(cifar, tmp_path):
    tiny, tiny_seed1 = Cell(TINY, TINY, None, 0, 10), Cell(TINY, TINY, None, 1, 10)
    big, other = (Cell(name, name, None, 0, 10) for name in ("shufflenet_v1_x0_5_g3", "shufflenet_v1_x0_25_g8"))
    cells = [tiny, tiny_seed1, big, other]
    grid = tiny_grid(Grid, cifar, tmp_path)
    before = grid.seconds_left(cells)
    grid.results.mkdir(parents=True)
    for cell, seconds in ((tiny, 300.0), (big, 100.0)):  # unlike their estimates: the tiny cell slower
        grid.result_path(cell).write_text(json.dumps({"train_seconds": seconds}))
    (grid.runs / tiny_seed1.name).mkdir(parents=True)
    (grid.runs / tiny_seed1.name / "metrics.jsonl").write_text("{}\n" * 4)  # 4 of 10 epochs done
    left = grid.seconds_left(cells)
    assert left[tiny.name] == left[big.name] == 0 and left[tiny_seed1.name] == pytest.approx(300.0 * 0.6)
    scale = 400.0 / (before[tiny.name] + before[big.name])  # a row not seen yet: rescaled by all finished cells
    assert left[other.name] == pytest.approx(before[other.name] * scale)


@dataclass
class Untrained(Grid):
    """Cells that write the configuration they would train and a made-up result (no training: scheduling is
    what is tested), with estimates of their training seconds given by the test."""

    estimates: dict[str, float] = field(default_factory=dict)

    def seconds_left(self, cells):
        return {cell.name: self.estimates.get(cell.name, 1.0) for cell in cells}

    def train_cell(self, cell, device=None):
        run_dir = self.runs / cell.name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(self.config(cell, device))))
        return {"run_dir": str(run_dir), "eval_top1_err": 90.0, "eval_top5_err": 50.0, "eval_top1": 10.0,
                "train_seconds": 1.0, "images_per_sec": 1.0, "epoch": 1}


def test_a_time_limit_starts_only_the_cells_that_end_within_it(cifar, tmp_path, capsys):
    cells = [Cell(TINY, TINY, None, seed, 1) for seed in range(4)]
    grid = tiny_grid(Untrained, cifar, tmp_path, estimates={cells[0].name: 30 * 60.0, cells[1].name: 3 * 60.0,
                                                            cells[2].name: 8 * 60.0})
    records = run_grid(grid, cells, workers=0, progress=False, time_limit=10)  # 10 minutes: not the 30-minute cell
    assert sorted(r["cell"]["seed"] for r in records) == [1, 2, 3]
    assert [grid.state(cell)[0] for cell in cells] == ["pending", "done", "done", "done"]
    assert run_grid(grid, cells, workers=0, progress=False, time_limit=20) == []  # still does not fit
    assert [r["cell"]["seed"] for r in run_grid(grid, cells, workers=0, progress=False)] == [0]  # no limit
    assert not ray.is_initialized()


def test_sigterm_to_a_driver_on_its_own_ray_stops_its_cells_and_the_same_command_goes_on(cifar, tmp_path):
    """`kill PID` of `shufflenet reproduce --workers 2` (a local Ray of its own, in a process of its own) once a cell
    has ended an epoch: exit code 3, no result file, whole or partial, each cell's training state saved; the same
    grid run again resumes both cells and ends them, keeping the epochs already trained."""
    options = grid_options(cifar, tmp_path, "--epochs", "2", "--seeds", "2", "--max-steps-per-epoch", "20",
                           "--cells", "mobilenet*")
    command = [str(Path(sys.executable).parent / "shufflenet"), *options, "--workers", "2"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs, results = tmp_path / "runs", tmp_path / "results"
    deadline = time.time() + 240
    while len(list(runs.glob("*/config.json"))) < 2 or not any(  # both cells training, one an epoch in
            path.read_text().strip() for path in runs.glob("*/metrics.jsonl")):
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=180)
    assert driver.returncode == 3, err
    assert "stopped; every cell in flight saved its training state" in err and "run the same command again" in err
    assert [path.name for path in results.iterdir() if path.is_file()] == []  # no result, no temporary file
    grid = tiny_grid(Grid, cifar, tmp_path)
    cells = [Cell("mobilenet_v1_x0_25", "mobilenet_v1_x0_25", None, seed, 2) for seed in range(2)]
    assert [grid.state(cell)[0] for cell in cells] == ["partial", "partial"]
    trained = {cell.name: (runs / cell.name / "metrics.jsonl").read_text() for cell in cells}
    assert main([*options, "--workers", "0"]) == 0  # the same grid, here one cell at a time, without Ray
    for cell in cells:
        record = json.loads(grid.result_path(cell).read_text())
        assert record["final_epoch"] == 2 and record["placement"]["resumed_from_epoch"] is not None
        metrics = (runs / cell.name / "metrics.jsonl").read_text()
        assert metrics.startswith(trained[cell.name])
        assert [json.loads(line)["epoch"] for line in metrics.splitlines()] == [1, 2]
    assert not ray.is_initialized()


# --- on the module's Ray instance (the first test warms its four workers: each imports torch) ---

class MeetAllFour(Untrained):
    """Each cell waits until four cells run at once (else it fails, and the test with it)."""

    def train_cell(self, cell, device=None):
        self.runs.mkdir(parents=True, exist_ok=True)
        (self.runs / f"{cell.name}.here").write_text("")
        deadline = time.time() + 60
        while len(list(self.runs.glob("*.here"))) < 4:
            if time.time() > deadline:
                raise RuntimeError(f"only {len(list(self.runs.glob('*.here')))} cells ran at once")
            time.sleep(0.1)
        return super().train_cell(cell, device)


def test_cells_pack_four_to_a_gpu(local_ray, cifar, tmp_path):
    grid = tiny_grid(MeetAllFour, cifar, tmp_path, max_steps=1)
    cells = [Cell(TINY, TINY, None, seed, 1) for seed in range(4)]
    records = run_grid(grid, cells, gpus_per_cell=0.25, progress=False)
    assert len(records) == 4 and not grid.failures(cells)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for record in records:
        placement = record["placement"]
        assert placement["gpu_ids"] == ["0"] and placement["cuda_visible_devices"] == "0"
        assert placement["device"] == record["config"]["device"] == device
        assert record["config"]["amp"] and record["config"]["channels_last"]
        assert device == "cuda" or "trained on the CPU" in placement["note"]


def test_two_workers_on_ray_give_the_results_of_one_cell_at_a_time(local_ray, cifar, tmp_path):
    cells = [Cell(TINY, TINY, None, seed, 1) for seed in range(2)]
    alone = tiny_grid(Grid, cifar, tmp_path / "alone", max_steps=2)
    on_ray = tiny_grid(Grid, cifar, tmp_path / "ray", max_steps=2)
    one = {r["cell"]["seed"]: r for r in run_grid(alone, cells, workers=0, progress=False)}
    two = {r["cell"]["seed"]: r for r in run_grid(on_ray, cells, workers=2, gpus_per_cell=0, progress=False)}
    assert len(one) == 2 and one.keys() == two.keys()
    for seed, record in two.items():
        for key in ("top1_err", "top5_err", "top1", "final_epoch", "params", "mflops_224"):
            assert record[key] == one[seed][key], (seed, key)
        name = cells[seed].name
        losses = [[json.loads(line)["train_loss"] for line in (grid.runs / name / "metrics.jsonl").read_text()
                   .splitlines()] for grid in (alone, on_ray)]
        assert losses[0] == losses[1]
        assert record["placement"]["device"] == "cpu" and record["placement"]["threads"] == 1
        assert record["config"]["threads"] == 1 and one[seed]["config"]["threads"] == 1
        assert all(part in record["command"] for part in ("--data-dir", "--no-md5-check", "--output", "--name " + name))
    spans = sorted((r["placement"]["started"], r["placement"]["ended"]) for r in two.values())
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two cells at once
    assert [on_ray.state(cell)[0] for cell in cells] == ["done"] * 2


def test_on_ray_a_time_limit_leaves_the_cells_that_would_end_past_it(local_ray, cifar, tmp_path):
    cells = [Cell(TINY, TINY, None, seed, 1) for seed in range(3)]
    grid = tiny_grid(Untrained, cifar, tmp_path, estimates={cells[0].name: 60 * 60.0})
    records = run_grid(grid, cells, workers=2, progress=False, time_limit=5)
    assert sorted(r["cell"]["seed"] for r in records) == [1, 2]
    assert [grid.state(cell)[0] for cell in cells] == ["pending", "done", "done"]  # not left locked either


def test_a_cell_that_fails_is_recorded_and_the_others_go_on(local_ray, cifar, tmp_path, capsys):
    grid = tiny_grid(Grid, cifar, tmp_path, max_steps=1)
    bad = Cell(f"{TINY}-bad", TINY, '{"no_such_argument": 1}', 0, 1)
    good = Cell(TINY, TINY, None, 0, 1)
    records = run_grid(grid, [bad, good], workers=2, progress=False)
    assert [r["cell"]["key"] for r in records] == [TINY]
    failure = json.loads(grid.failure_path(bad).read_text())
    assert "no_such_argument" in failure["error"] and "\n" not in failure["error"]
    assert grid.state(bad)[0] == "failed" and grid.state(good)[0] == "done"


class DiesAfterFirstEpoch(Grid):
    """The first worker to train a cell is killed (SIGKILL) right after its first epoch's checkpoint."""

    def train_cell(self, cell, device=None):
        marker = self.runs / f"{cell.name}.killed"
        if not marker.exists():
            from shufflenet.engine import trainer

            real = trainer.save_training_state

            def save_then_die(state, path):
                real(state, path)
                metrics = (self.runs / cell.name / "metrics.jsonl").read_text()
                marker.write_text(json.dumps({"pid": os.getpid(), "metrics": metrics}))
                os.kill(os.getpid(), signal.SIGKILL)

            trainer.save_training_state = save_then_die
        return super().train_cell(cell, device)


def test_a_killed_worker_is_retried_and_resumes_from_its_last_epoch(local_ray, cifar, tmp_path):
    grid = tiny_grid(DiesAfterFirstEpoch, cifar, tmp_path, max_steps=2)
    cell = Cell(TINY, TINY, None, 0, 2)
    records = run_grid(grid, [cell], workers=1, progress=False)
    killed = json.loads((tmp_path / "runs" / f"{cell.name}.killed").read_text())
    assert len(records) == 1 and records[0]["final_epoch"] == 2
    assert records[0]["placement"]["resumed_from_epoch"] == 1 and records[0]["placement"]["pid"] != killed["pid"]
    metrics = (tmp_path / "runs" / cell.name / "metrics.jsonl").read_text()
    assert killed["metrics"].count("\n") == 1 and metrics.startswith(killed["metrics"])  # epoch 1 kept, not redone
    assert [json.loads(line)["epoch"] for line in metrics.splitlines()] == [1, 2]
