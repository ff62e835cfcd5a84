"""`shufflenet reproduce`: the tables as data, the grid (skip finished cells, resume, shared cells), the report
(verdicts computed from the cell files), Table 1."""
import dataclasses
import json
import re

import pytest
from conftest import write_fake_cifar

from shufflenet.cli import main
from shufflenet.experiments import Plan
from shufflenet.experiments.grid import Cell, Grid
from shufflenet.experiments.report import pair_label, pairs, verdicts
from shufflenet.experiments.tables import TRAINING_TABLES, table_rows


def test_tables_are_the_papers_rows():
    assert [r.paper_err for r in table_rows("table2") if r.group == "0.25x"] == [57.1, 55.0, 52.7]
    assert [r.paper_err for r in table_rows("table2", extended=True) if r.group == "0.25x"] == [
        57.1, 56.8, 55.0, 54.2, 52.7]
    table3 = table_rows("table3")
    assert len(table3) == 8 and sum(r.model_args == '{"shuffle": false}' for r in table3) == 4
    assert {r.model for r in table_rows("table4")} >= {"table4_vgg_38m", "shufflenet_v1_x0_5_g4",
                                                        "shufflenet_v1_x0_25_g8"}
    assert [r.model for r in table_rows("table5")] == ["mobilenet_v1_x0_25", "shufflenet_v1_x0_5_g4",
                                                        "shufflenet_v1_x0_5_g3_shallow"]
    assert len(table_rows("table2", extended=True)) == 15


@pytest.mark.parametrize("extended", [False, True])
def test_every_pair_of_a_table_has_a_legend_label_of_its_own(extended):
    for table in TRAINING_TABLES:
        labels = [pair_label(*pair) for pair in pairs(table_rows(table, extended=extended))]
        assert len(set(labels)) == len(labels), f"{table}: {labels}"


def test_cells_shared_between_tables_run_once():
    plan = Plan(("table2", "table3", "table4", "table5"), epochs=3, seeds=2)
    rows = [row for table in plan.rows().values() for row in table]
    trainings = {(row.model, row.model_args) for row in rows}
    # A cell name (its result file, its run folder) stands for one training: rows that train differently (Table
    # 3's shuffle on / off of one model) never share one, and every seed has its own.
    assert len({row.key for row in rows}) == len(trainings)
    cells = plan.cells()
    assert {(c.model, c.model_args) for c in cells} == trainings
    assert len({c.name for c in cells}) == len(cells) == 2 * len(trainings)
    # Table 3's "with shuffle" rows are Table 2's g=3 / g=8 models; Table 5's 0.5x g=4 is Table 4's 38 MFLOPs one
    assert len(cells) == 2 * (7 + 4 + 8 + 2)


def fake_cells(tmp_path, errors: dict[str, list[float]], epochs: int = 3) -> None:
    for key, values in errors.items():
        for seed, error in enumerate(values):
            cell = Cell(key, key.split("-")[0], None, seed, epochs)
            (tmp_path / f"{cell.name}.json").write_text(json.dumps(
                {"top1_err": error, "mflops_224": 1.0, "cell": {"epochs": epochs, "seed": seed}}))


def test_verdicts_agree_disagree_and_decide_from_the_cell_files(tmp_path):
    rows = [r for r in table_rows("table2", extended=True) if r.group == "0.25x"]
    fake_cells(tmp_path, {"shufflenet_v1_x0_25_g1": [40.0, 40.4], "shufflenet_v1_x0_25_g2": [39.0, 39.2],
                          "shufflenet_v1_x0_25_g3": [40.3, 39.9], "shufflenet_v1_x0_25_g8": [42.0, 42.5]})
    from shufflenet.experiments.report import load_cells

    found = {v["better"].model: v for v in verdicts(rows, load_cells(tmp_path), 3, 2)}
    g2, g3, g8 = (found[f"shufflenet_v1_x0_25_g{g}"] for g in (2, 3, 8))
    # better by 40.2 - 39.1 = 1.1 against a spread of 0.4, but the paper's difference (57.1 - 56.8 = 0.3) is smaller
    # than our spread: the cell cannot tell the paper's effect
    assert g2["agrees"] and g2["ours"] == pytest.approx(1.1) and not g2["decides"]
    assert g3["ours"] == pytest.approx(0.1) and not g3["decides"]  # within the seeds' spread
    assert not g8["agrees"] and g8["decides"]  # worse by 2.05 against a spread of 0.5 (paper: better by 4.4)
    assert found["shufflenet_v1_x0_25_g4"]["ours"] is None  # not run


def test_one_seed_has_no_spread_and_decides_nothing(tmp_path):
    rows = [r for r in table_rows("table2", extended=True) if r.group == "0.25x"]
    # a difference of 10 points, far above the paper's 4.4, still decides nothing without a second seed
    fake_cells(tmp_path, {"shufflenet_v1_x0_25_g1": [50.0], "shufflenet_v1_x0_25_g8": [40.0]})
    from shufflenet.experiments.report import load_cells

    g8 = next(v for v in verdicts(rows, load_cells(tmp_path), 3, 1) if v["better"].model.endswith("_g8"))
    assert g8["agrees"] and g8["ours"] == pytest.approx(10.0)
    assert g8["spread"] is None and not g8["decides"]


def test_both_scales_say_how_each_verdict_moved_with_training_length(tmp_path):
    from shufflenet.experiments.report import load_cells, scale_comparison, scale_summary

    fake_cells(tmp_path, {"shufflenet_v1_x0_25_g1": [40.0, 40.4], "shufflenet_v1_x0_25_g3": [38.0, 38.2],
                          "shufflenet_v1_x0_25_g8": [39.0, 39.2]}, epochs=2)
    fake_cells(tmp_path, {"shufflenet_v1_x0_25_g1": [30.0, 30.2], "shufflenet_v1_x0_25_g3": [30.3, 30.9],
                          "shufflenet_v1_x0_25_g8": [29.4, 30.0]}, epochs=10)
    tables, cells = {"table2": table_rows("table2")}, load_cells(tmp_path)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in scale_comparison(tables, cells, 2).splitlines()]
    lines = {row[1]: row[3:] for row in rows[2:]}  # favoured row: paper, 2 epochs, 10 epochs, change
    # g3: 40.2 - 38.1 = +2.10 (spread 0.4 decides) at 2 epochs, 30.1 - 30.6 = -0.50 (spread 0.6: does not) at 10
    assert lines["ShuffleNet 0.25x, g = 3"][1:] == [
        "+2.10 (spread 0.40; agrees, decides)", "-0.50 (spread 0.60; disagrees)",
        "sign flips (+2.10 -> -0.50); no longer decides"]
    # g8: +1.10 then +0.40, below its spread of 0.60: no longer decides
    assert lines["ShuffleNet 0.25x, g = 8"][-1] == "0.70 smaller; no longer decides"
    assert lines["ShuffleNet 0.5x, g = 3"][1:] == ["not run", "not run", ""]
    assert scale_summary(tables, cells, 2) == (
        "Of the 2 pairs run at both 2 and 10 epochs: at 10 epochs 1 agree with the paper's sign and 0 decide; "
        "1 kept their sign from 2 epochs and 1 flipped it; 2 margins shrank and 0 grew.")


def test_grid_skips_finished_cells_resumes_and_reports(tmp_path, monkeypatch, capsys, few_cifar_images):
    write_fake_cifar(tmp_path / "cifar")
    grid = ["--data-dir", str(tmp_path / "cifar"), "--no-md5-check", "--epochs", "2", "--seeds", "1",
            "--output", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
            "--threads", "1", "--max-steps-per-epoch", "1", "--workers", "0", "--no-compile"]  # in this process
    assert main(["reproduce", "table5", *grid, "--list"]) == 0
    listed = capsys.readouterr().out
    assert len(re.findall(r"\|\s*pending\s*\|", listed)) == 3 and "minutes of training left" in listed
    import shufflenet.experiments.grid as grid_module

    real, calls = grid_module.train, []

    def stop_the_second_cell_after_one_epoch(config, **kwargs):
        calls.append(config.name)
        if len(calls) == 2:
            real(dataclasses.replace(config, epochs=1), **kwargs)  # its state saved after epoch 1
            raise KeyboardInterrupt("stopped")
        return real(config, **kwargs)

    monkeypatch.setattr(grid_module, "train", stop_the_second_cell_after_one_epoch)
    assert main(["reproduce", "table5", *grid]) == 3  # stopped: "continue with the same command"
    monkeypatch.setattr(grid_module, "train", real)
    done = sorted(p.name for p in (tmp_path / "results").glob("*.json"))
    assert len(done) == 1
    first = (tmp_path / "results" / done[0]).stat().st_mtime_ns
    half = tmp_path / "runs" / calls[1] / "metrics.jsonl"
    epoch_1 = half.read_text()
    assert len(epoch_1.splitlines()) == 1
    capsys.readouterr()
    assert main(["reproduce", "table5", *grid, "--list"]) == 0
    assert re.search(rf"{re.escape(calls[1])}\s*\|\s*partial\s*\|\s*1/2", capsys.readouterr().out)
    assert main(["reproduce", "table5", *grid]) == 0
    assert (tmp_path / "results" / done[0]).stat().st_mtime_ns == first  # finished cell skipped
    # The half-trained cell resumed from its state: epoch 1 is the one trained before the stop, not a new one.
    resumed = json.loads((tmp_path / "results" / f"{calls[1]}.json").read_text())
    assert half.read_text().startswith(epoch_1) and len(half.read_text().splitlines()) == 2
    assert resumed["final_epoch"] == 2
    cells = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    assert len(cells) == 3
    assert all({"command", "machine", "config", "mflops_224", "mflops_trained", "params", "top1_err", "top5_err",
                "train_seconds"} <= set(c) for c in cells)
    mobilenet = next(c for c in cells if c["cell"]["model"] == "mobilenet_v1_x0_25")
    assert mobilenet["config"]["small_input"] and mobilenet["mflops_224"] == pytest.approx(41.03, abs=0.01)
    page = (tmp_path / "docs" / "reproduction.md").read_text()
    assert "Table 5" in page and "0.25 MobileNet-224" in page and (tmp_path / "docs" / "reproduction" /
                                                                   "table5.png").is_file()
    assert main(["reproduce", "table5", *grid, "--report-only"]) == 0  # regenerated from the files alone


def test_grid_without_data_says_where_to_get_cifar(tmp_path, capsys):
    assert main(["reproduce", "table2", "--output", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")]) == 2
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err


def test_cells_pattern_lists_and_trains_only_the_matching_cells(tmp_path, capsys):
    where = ["--epochs", "10", "--seeds", "2", "--output", str(tmp_path / "r"), "--runs", str(tmp_path / "runs")]
    assert main(["reproduce", "table3", *where, "--list", "--cells", "*x0_25_g8*"]) == 0
    listed = re.findall(r"^\| (\S+-e10-s\d) ", capsys.readouterr().out, re.M)
    # Table 3's 0.25x g = 8 rows (with and without shuffle), 2 seeds each; not 0.25x g = 3 nor 0.5x g = 8
    assert sorted(listed) == ["shufflenet_v1_x0_25_g8-e10-s0", "shufflenet_v1_x0_25_g8-e10-s1",
                              "shufflenet_v1_x0_25_g8-shuffle=false-e10-s0",
                              "shufflenet_v1_x0_25_g8-shuffle=false-e10-s1"]
    assert main(["reproduce", "table3", *where, "--cells", "table4_*"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'table4_*' matches none of the 16 cells of table3" in error


def test_table1_writes_its_record_and_page(tmp_path, capsys):
    assert main(["reproduce", "table1", "--list", "--output", str(tmp_path / "results" / "reproduce"), "--docs",
                 str(tmp_path / "docs")]) == 0
    assert not (tmp_path / "results" / "table1.json").exists()  # --list lists and writes nothing
    assert main(["reproduce", "table1", "--output", str(tmp_path / "results" / "reproduce"), "--docs",
                 str(tmp_path / "docs")]) == 0
    record = json.loads((tmp_path / "results" / "table1.json").read_text())
    rows = {(r[0], r[1]): r for r in record["rows"]}
    assert rows[("ShuffleNet Table 1", "1x, g = 3")][4] == 137.46
    assert "our Stage-4 width 192" in rows[("ShuffleNet Table 4", "ResNet, 38 MFLOPs")][-1]
    assert "ShuffleNet Table 4" in (tmp_path / "docs" / "table1.md").read_text()


def test_grid_cells_take_the_shared_config_check(tmp_path):
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        Grid("cifar10", "x", tmp_path, tmp_path).config(Cell("m", "shufflenet_v1_x0_5_g3", None, 0, 0))
