"""The paper's training experiments as data: each table is a list of rows, each row a model (with arguments)
beside the paper's ImageNet error; a cell is a row's model trained with one seed.

The default scale runs where the paper's effects are largest and is sized for 3 hours of a 2-core CPU (the
measured time is in docs/reproduction.md): Table 2 at 0.5x (g = 1, 3, 4, 8) and 0.25x (g = 1, 3, 8), Table 3 at
0.5x and 0.25x, Table 4 at 38 and 13 MFLOPs, Table 5 at the 41/38/40 rung. ``--extended`` adds g = 2 and 4
everywhere, 1x (140 MFLOPs) and the 149/140 rung.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..models.registry import scale_tag
from ..models.structures import STRUCTURES, TABLE4_BUDGETS
from ..paper.published import TABLE2_TOP1_ERR, TABLE3_TOP1_ERR, TABLE4_TOP1_ERR, TABLE5_RUNGS

TRAINING_TABLES = ("table2", "table3", "table4", "table5")
DEFAULT_SCALES = (0.5, 0.25)
EXTENDED_SCALES = (1.0, 0.5, 0.25)
DEFAULT_BUDGETS = (38, 13)
EXTENDED_BUDGETS = (140, 38, 13)
DEFAULT_RUNGS = ("41/38/40",)
EXTENDED_RUNGS = ("149/140", "41/38/40")
GROUPS = (1, 2, 3, 4, 8)
# Table 2's default groups per scale: g = 2 and 4 are the intermediate points of the trend (0.5x g = 4 is also
# Table 4's and Table 5's 38-MFLOPs ShuffleNet); the extended grid runs every g.
DEFAULT_GROUPS = {0.5: (1, 3, 4, 8), 0.25: (1, 3, 8)}

# What each table claims (Sec. 4.1-4.3), and how a row of ours is judged against it.
CLAIMS = {
    "table2": "Pointwise group convolutions help: at equal complexity, more groups (g > 1) give a lower error than "
              "g = 1, most for the smallest models (0.25x: 4.4 points).",
    "table3": "Channel shuffle helps: with it, the error is lower than without, most for large g (g = 8).",
    "table4": "At equal complexity ShuffleNet units beat VGG-like, ResNet, Xception-like and ResNeXt units.",
    "table5": "ShuffleNet beats MobileNet V1 at every complexity.",
}


@dataclass(frozen=True)
class Row:
    """A table row: ``model`` built with ``args``, labelled as in the paper, beside the paper's error; ``group``
    is what the row is compared within (a scale, a (scale, g) pair, a budget, a rung); ``role`` what the
    paper's claim says of it (``"best"``: the row the claim favours; ``"baseline"``: the row it beats)."""

    table: str
    label: str
    model: str
    paper_err: float | None
    group: str
    role: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The cell's name, shared by every table that trains the same model with the same arguments."""
        suffix = "".join(f"-{name}={json.dumps(value)}" for name, value in self.args)
        return self.model + suffix.replace('"', "")

    @property
    def model_args(self) -> str | None:
        return json.dumps(dict(self.args)) if self.args else None


def table2(scales: tuple[float, ...], extended: bool) -> list[Row]:
    return [Row("table2", f"ShuffleNet {scale:g}x, g = {g}", f"shufflenet_v1_{scale_tag(scale)}_g{g}",
                TABLE2_TOP1_ERR[scale][g], f"{scale:g}x", "baseline" if g == 1 else "candidate")
            for scale in scales for g in (GROUPS if extended else DEFAULT_GROUPS[scale])]


def table3(scales: tuple[float, ...]) -> list[Row]:
    rows = []
    for scale in scales:
        for g in (3, 8):
            with_shuffle, without = TABLE3_TOP1_ERR[(scale, g)]
            model = f"shufflenet_v1_{scale_tag(scale)}_g{g}"
            group = f"{scale:g}x g={g}"
            rows.append(Row("table3", f"ShuffleNet {scale:g}x (g = {g}), shuffle", model, with_shuffle, group, "best"))
            rows.append(Row("table3", f"ShuffleNet {scale:g}x (g = {g}), no shuffle", model, without, group,
                            "baseline", (("shuffle", False),)))
    return rows


def table4(budgets: tuple[int, ...]) -> list[Row]:
    labels = {"vgg": "VGG-like", "resnet": "ResNet", "xception": "Xception-like", "resnext": "ResNeXt"}
    rows = []
    for budget in budgets:
        errors = TABLE4_TOP1_ERR[budget]
        for structure in STRUCTURES:
            rows.append(Row("table4", f"{labels[structure]} ({budget} MFLOPs)", f"table4_{structure}_{budget}m",
                            errors[structure], f"{budget} MFLOPs", "baseline"))
        rows.append(Row("table4", f"ShuffleNet ({budget} MFLOPs: {TABLE4_BUDGETS[budget]})", TABLE4_BUDGETS[budget],
                        errors["shufflenet"], f"{budget} MFLOPs", "best"))
    return rows


def table5(rungs: tuple[str, ...]) -> list[Row]:
    return [Row("table5", label, model, error, rung, "baseline" if model.startswith("mobilenet") else "best")
            for rung in rungs for label, model, _, error in TABLE5_RUNGS[rung]]


def table_rows(table: str, extended: bool = False) -> list[Row]:
    """The rows of ``table`` at the default scale, or the extended one."""
    if table == "table2":
        return table2(EXTENDED_SCALES if extended else DEFAULT_SCALES, extended)
    if table == "table3":
        return table3(EXTENDED_SCALES if extended else DEFAULT_SCALES)
    if table == "table4":
        return table4(EXTENDED_BUDGETS if extended else DEFAULT_BUDGETS)
    if table == "table5":
        return table5(EXTENDED_RUNGS if extended else DEFAULT_RUNGS)
    raise ValueError(f"unknown training table {table!r}; choose from {', '.join(TRAINING_TABLES)}")
