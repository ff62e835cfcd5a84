"""docs/reproduction.md and its plots, generated from the cell result files alone.

Per table: our final-epoch top-1 error beside the paper's, every seed's value (mean +- std from 3 seeds), the
paper's claim, and per compared pair whether our numbers agree with it and whether they decide it: a pair does
not decide when our seed spread (the largest range of a row's seeds) reaches either the paper's difference or
ours. A hand-written discussion between the ``discussion`` markers is kept when the page is regenerated.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_output
from ..io.figures import save_figure
from ..text_table import format_table
from .grid import Cell
from .tables import CLAIMS, Row

DISCUSSION_START, DISCUSSION_END = "<!-- discussion:start -->", "<!-- discussion:end -->"
TITLES = {"table2": "Table 2: error vs number of groups", "table3": "Table 3: with and without channel shuffle",
          "table4": "Table 4: ShuffleNet units against other structures",
          "table5": "Table 5: ShuffleNet against MobileNet V1"}


def load_cells(results: Path) -> dict[str, dict[str, Any]]:
    """Every cell result under ``results``, by cell name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}


def row_errors(row: Row, cells: dict[str, dict[str, Any]], epochs: int, seeds: int) -> list[float]:
    """The final-epoch top-1 errors of ``row``'s cells that have finished, seed by seed."""
    names = [Cell(row.key, row.model, row.model_args, seed, epochs).name for seed in range(seeds)]
    return [cells[name]["top1_err"] for name in names if name in cells]


def summary(errors: list[float]) -> str:
    if not errors:
        return "not run"
    values = " / ".join(f"{e:.2f}" for e in errors)
    if len(errors) >= 3:
        return f"{statistics.mean(errors):.2f} +- {statistics.stdev(errors):.2f} ({values})"
    return values


def spread(errors: list[float]) -> float | None:
    """Range of the seeds' errors; unknown (None) with a single seed."""
    return max(errors) - min(errors) if len(errors) > 1 else None


def pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(the row the claim favours, the row it should beat) within each group."""
    by_group: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_group[row.group].append(row)
    result = []
    for group in by_group.values():
        baselines = [r for r in group if r.role == "baseline"]
        favoured = [r for r in group if r.role != "baseline"]
        if rows[0].table == "table4":  # every structure against the group's ShuffleNet
            result += [(favoured[0], base) for base in baselines]
        else:  # every candidate (more groups, shuffle, ShuffleNet) against the group's baseline
            result += [(better, baselines[0]) for better in favoured]
    return result


def verdicts(rows: list[Row], cells: dict[str, dict[str, Any]], epochs: int, seeds: int) -> list[dict[str, Any]]:
    out = []
    for better, baseline in pairs(rows):
        ours_b, ours_base = row_errors(better, cells, epochs, seeds), row_errors(baseline, cells, epochs, seeds)
        known = better.paper_err is not None and baseline.paper_err is not None
        paper = baseline.paper_err - better.paper_err if known else None
        if not ours_b or not ours_base:
            out.append({"better": better, "baseline": baseline, "paper": paper, "ours": None})
            continue
        ours = statistics.mean(ours_base) - statistics.mean(ours_b)
        spreads = [spread(ours_b), spread(ours_base)]
        noise = None if None in spreads else max(spreads)
        decides = noise is not None and noise < abs(ours) and (paper is None or noise < abs(paper))
        out.append({"better": better, "baseline": baseline, "paper": paper, "ours": ours, "spread": noise,
                     "agrees": ours > 0, "decides": decides})
    return out


def table_markdown(rows: list[Row], cells: dict[str, dict[str, Any]], epochs: int, seeds: int) -> str:
    lines = []
    mflops = {}
    for row in rows:
        errors = row_errors(row, cells, epochs, seeds)
        cell = next((cells[n] for n in cells if n.startswith(row.key + f"-e{epochs}-")), None)
        mflops[row.key] = cell["mflops_224"] if cell else None
        lines.append((row.label, row.model + ("" if not row.args else f" {dict(row.args)}"),
                      None if cell is None else round(cell["mflops_224"], 1), row.paper_err, summary(errors),
                      None if not errors else round(statistics.mean(errors), 2)))
    table = format_table(("paper row", "our model", "MFLOPs @224", "paper top-1 err (ImageNet)",
                          "our top-1 err, CIFAR-10 (per seed)", "our mean"), lines)
    verdict_rows = []
    for v in verdicts(rows, cells, epochs, seeds):
        paper = None if v["paper"] is None else round(v["paper"], 1)
        if v["ours"] is None:
            verdict_rows.append((v["better"].label, v["baseline"].label, paper, None, None, "not run", ""))
            continue
        verdict_rows.append((v["better"].label, v["baseline"].label, paper, round(v["ours"], 2),
                             "one seed" if v["spread"] is None else round(v["spread"], 2),
                             "agrees" if v["agrees"] else "disagrees", "yes" if v["decides"] else "no"))
    verdict = format_table(("favoured by the paper", "against", "paper: error lower by", "ours: lower by",
                            "our seed spread", "our sign", "decides"), verdict_rows)
    return table + "\n\n" + verdict


def plot_table(table: str, rows: list[Row], cells: dict[str, dict[str, Any]], epochs: int, seeds: int,
               path: Path) -> Path:
    """Ours (CIFAR-10) beside the paper's (ImageNet): error per row, grouped as the table groups them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ours_axis, paper_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = list(dict.fromkeys(row.group for row in rows))
    for axis, source in ((ours_axis, "ours"), (paper_axis, "paper")):
        for index, group in enumerate(groups):
            members = [row for row in rows if row.group == group]
            xs = [index + (i - (len(members) - 1) / 2) * 0.8 / max(len(members), 1) for i in range(len(members))]
            for x, row in zip(xs, members):
                values = row_errors(row, cells, epochs, seeds) if source == "ours" else (
                    [row.paper_err] if row.paper_err is not None else [])
                colour = "tab:green" if row.role != "baseline" else "tab:red"
                axis.scatter([x] * len(values), values, color=colour, s=18)
                if values:
                    axis.annotate(short_label(row), (x, max(values)), fontsize=6, rotation=60,
                                  xytext=(0, 4), textcoords="offset points")
        axis.set_xticks(range(len(groups)), groups, fontsize=8)
        axis.set_ylabel("top-1 error (%)")
        axis.set_title(f"ours: CIFAR-10, {epochs} epochs, each seed" if source == "ours" else
                       "paper: ImageNet", fontsize=9)
        axis.grid(alpha=0.3)
    figure.suptitle(f"{TITLES[table]} (green: favoured by the paper, red: what it should beat)", fontsize=10)
    return save_figure(figure, path)


def short_label(row: Row) -> str:
    label = row.label.replace("ShuffleNet", "SN").replace("MobileNet", "MN")
    return label.split("(")[0].strip() if row.table == "table4" else label


def pair_label(better: Row, baseline: Row) -> str:
    """A pair in a legend: both short labels, and the budget where the short labels drop it (Table 4)."""
    label = f"{short_label(better)} vs {short_label(baseline)}"
    return f"{label}, {baseline.group}" if baseline.table == "table4" else label


def seed_differences(better: Row, baseline: Row, cells: dict[str, dict[str, Any]], epochs: int,
                     seeds: int) -> list[float]:
    """The baseline's error minus the favoured row's, seed by seed (where both cells of a seed finished)."""
    out = []
    for seed in range(seeds):
        names = [Cell(row.key, row.model, row.model_args, seed, epochs).name for row in (better, baseline)]
        if all(name in cells for name in names):
            out.append(cells[names[1]]["top1_err"] - cells[names[0]]["top1_err"])
    return out


def scales_of(cells: dict[str, dict[str, Any]]) -> list[int]:
    """The epochs per cell of every grid whose results are here (2, 10, ...)."""
    return sorted({cell["cell"]["epochs"] for cell in cells.values()})


def scale_change(first: dict[str, Any], last: dict[str, Any]) -> str:
    """How a pair's verdict moved from the shortest training to the longest: sign, size, deciding."""
    if first["ours"] is None or last["ours"] is None:
        return ""
    if first["agrees"] != last["agrees"]:
        size = f"sign flips ({first['ours']:+.2f} -> {last['ours']:+.2f})"
    else:
        size = f"{abs(abs(first['ours']) - abs(last['ours'])):.2f} " + (
            "smaller" if abs(last["ours"]) < abs(first["ours"]) else "larger")
    decides = {(True, True): "still decides", (True, False): "no longer decides", (False, True): "now decides",
               (False, False): "decides at neither"}[first["decides"], last["decides"]]
    return f"{size}; {decides}"


def scale_verdicts(tables: dict[str, list[Row]], cells: dict[str, dict[str, Any]],
                   seeds: int) -> list[tuple[str, tuple[dict[str, Any], ...]]]:
    """(table, the pair's verdict at each scale of ``scales_of(cells)``) for every pair of every table."""
    return [(table, per_scale) for table, rows in tables.items()
            for per_scale in zip(*(verdicts(rows, cells, epochs, seeds) for epochs in scales_of(cells)))]


def scale_comparison(tables: dict[str, list[Row]], cells: dict[str, dict[str, Any]], seeds: int) -> str:
    """Every pair at every scale: our difference (mean over seeds), the seed spread and the verdict, and how it
    moved from the shortest training to the longest."""
    scales = scales_of(cells)
    lines = []
    for table, per_scale in scale_verdicts(tables, cells, seeds):
        first = per_scale[0]
        line = [table, first["better"].label, first["baseline"].label,
                None if first["paper"] is None else round(first["paper"], 1)]
        for v in per_scale:
            if v["ours"] is None:
                line.append("not run")
                continue
            noise = "one seed" if v["spread"] is None else f"spread {v['spread']:.2f}"
            verdict = ("agrees" if v["agrees"] else "disagrees") + (", decides" if v["decides"] else "")
            line.append(f"{v['ours']:+.2f} ({noise}; {verdict})")
        lines.append((*line, scale_change(first, per_scale[-1])))
    headers = ("table", "favoured by the paper", "against", "paper: lower by",
               *(f"ours at {epochs} epochs: lower by" for epochs in scales), f"{scales[0]} -> {scales[-1]} epochs")
    return format_table(headers, lines)


def scale_summary(tables: dict[str, list[Row]], cells: dict[str, dict[str, Any]], seeds: int) -> str:
    """One sentence: at the longest training, how many pairs agree and decide; from the shortest, how many kept
    their sign and how many margins shrank."""
    scales = scales_of(cells)
    both = [(v[0], v[-1]) for _, v in scale_verdicts(tables, cells, seeds)
            if v[0]["ours"] is not None and v[-1]["ours"] is not None]
    last = [pair[1] for pair in both]
    kept = sum(a["agrees"] == b["agrees"] for a, b in both)
    shrank = sum(abs(b["ours"]) < abs(a["ours"]) for a, b in both)
    return (f"Of the {len(both)} pairs run at both {scales[0]} and {scales[-1]} epochs: at {scales[-1]} epochs "
            f"{sum(v['agrees'] for v in last)} agree with the paper's sign and {sum(v['decides'] for v in last)} "
            f"decide; {kept} kept their sign from {scales[0]} epochs and {len(both) - kept} flipped it; "
            f"{shrank} margins shrank and {len(both) - shrank} grew.")


def plot_scales(tables: dict[str, list[Row]], cells: dict[str, dict[str, Any]], seeds: int, path: Path) -> Path:
    """Each pair's difference (baseline error minus favoured error; above 0: the paper's sign) against the epochs
    per cell, mean over the seeds with error bars of their standard deviation, one panel per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = scales_of(cells)
    figure, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4.0), squeeze=False)
    for axis, (table, rows) in zip(axes[0], tables.items()):
        for better, baseline in pairs(rows):
            points = [(epochs, seed_differences(better, baseline, cells, epochs, seeds)) for epochs in scales]
            points = [(epochs, d) for epochs, d in points if d]
            if not points:
                continue
            means = [statistics.mean(d) for _, d in points]
            stds = [statistics.stdev(d) if len(d) > 1 else 0.0 for _, d in points]
            axis.errorbar([e for e, _ in points], means, yerr=stds, marker="o", capsize=3, linewidth=1,
                          label=pair_label(better, baseline))
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(scales)
        axis.set_xlabel("epochs per cell")
        axis.set_ylabel("error lower by (points)")
        axis.set_title(TITLES[table], fontsize=9)
        axis.legend(fontsize=5)
        axis.grid(alpha=0.3)
    figure.suptitle("Each pair's difference against training length (mean over seeds, bars: their std)",
                    fontsize=10)
    return save_figure(figure, path)


def render(tables: dict[str, list[Row]], results: Path, docs: Path, epochs: int, seeds: int,
           header: str) -> str:
    """Write docs/reproduction.md (keeping its discussion) and the plots; return the page."""
    cells = load_cells(results)
    page = [header]
    for table, rows in tables.items():
        plot = plot_table(table, rows, cells, epochs, seeds, docs / "reproduction" / f"{table}.png")
        page += [f"## {TITLES[table]}", "", f"The paper: {CLAIMS[table]}", "",
                 table_markdown(rows, cells, epochs, seeds), "", f"![{table}](reproduction/{plot.name})", ""]
    if len(scales_of(cells)) > 1:
        plot = plot_scales(tables, cells, seeds, docs / "reproduction" / "scales.png")
        page += ["## Both scales", "", "Every pair at every length of training whose cells are here (a grid that "
                 "is still running shows its finished cells; `not run` where a pair has none yet).", "",
                 scale_comparison(tables, cells, seeds), "", scale_summary(tables, cells, seeds), "",
                 f"![scales](reproduction/{plot.name})", ""]
    target = docs / "reproduction.md"
    discussion = f"{DISCUSSION_START}\n## Discussion\n\n(to be written from the results)\n{DISCUSSION_END}"
    if target.is_file():
        text = target.read_text()
        if DISCUSSION_START in text and DISCUSSION_END in text:
            discussion = text[text.index(DISCUSSION_START):text.index(DISCUSSION_END) + len(DISCUSSION_END)]
    text = "\n".join(page) + "\n" + discussion + "\n"
    with atomic_output(target) as temporary:
        temporary.write_text(text)
    return text
