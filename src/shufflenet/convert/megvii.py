"""megvii's official ShuffleNet V1 checkpoints (megvii-model/ShuffleNet-Series, ShuffleNetV1): keys renamed to
ours, and the channel order remapped (docs/weights.md)."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

import torch

from ..data.preprocessing import Preprocessing
from ..models.layers import channel_shuffle
from ..models.registry import build_model
from ..models.shufflenet_v1 import STAGE_REPEATS
from .common import Renamed, rename_each

SIGNATURE_KEY = "first_conv.0.weight"  # every megvii state dict has it
# megvii train.py: ToBGRTensor (BGR, 0-255, no mean/std); OpencvResize(256) (cv2 INTER_LINEAR) + CenterCrop(224).
PREPROCESSING = Preprocessing("BGR", 255.0, None, None, resize=256, crop=224, interpolation="bilinear")
BN_STATISTICS = ("weight", "bias", "running_mean", "running_var")  # per-channel BN tensors
UnitPermutations = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (sigma, tau, rho), see unit_permutations

UNIT = re.compile(r"features\.(\d+)\.branch_main_([12])\.(\d)\.(\w+)$")
# Official blocks.py: branch_main_1 = [pw conv, BN, ReLU, dw conv, BN], branch_main_2 = [pw conv, BN].
LAYERS = {("1", "0"): "pw1.conv", ("1", "1"): "pw1.bn", ("1", "3"): "dw.conv", ("1", "4"): "dw.bn",
                 ("2", "0"): "pw2.conv", ("2", "1"): "pw2.bn"}
PLAIN = {"first_conv.0.": "features.stem.conv.", "first_conv.1.": "features.stem.bn.",
                "classifier.0.": "classifier."}


def unit_name(index: int) -> str | None:
    """Official ``features.{index}`` (16 units, Stage 2 = 0-3, Stage 3 = 4-11, Stage 4 = 12-15) -> our unit."""
    for stage, repeats in enumerate(STAGE_REPEATS, start=2):
        if index < repeats:
            return f"features.stage{stage}.{index}"
        index -= repeats
    return None


def group_count(state: dict[str, torch.Tensor]) -> str:
    """g from the first unit's shapes: pw1 gives m outputs, grouped pw2 reads m / g inputs per group ('*' when
    the tensors are missing, which the model matching then reports)."""
    pw1, pw2 = (state.get(f"features.stage2.0.{layer}.conv.weight") for layer in ("pw1", "pw2"))
    return "*" if pw1 is None or pw2 is None else str(pw1.shape[0] // pw2.shape[1])


def rename_key(key: str) -> str | None:
    for prefix, ours in PLAIN.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    match = UNIT.match(key)
    if not match:
        return None
    unit, layer = unit_name(int(match[1])), LAYERS.get((match[2], match[3]))
    return None if unit is None or layer is None else f"{unit}.{layer}.{match[4]}"


def shuffle_sources(channels: int, groups: int) -> torch.Tensor:
    """``sources[j]``: the input channel that output ``j`` of ``channel_shuffle(x, groups)`` takes."""
    return channel_shuffle(torch.arange(channels).view(1, channels, 1, 1), groups).flatten()


def unit_permutations(mid: int, groups: int, first_groups: int, our_shuffle_groups: int) -> UnitPermutations | None:
    """Permutations that load one official unit into ours, or None when none exists (docs/weights.md).

    Returns (sigma, tau, rho): our pw1 output i (and its BN) is official channel sigma[i]; our depthwise conv and
    its BN at position j are official channel tau[j]; our pw2 input column j is official pw2 column rho[j].
    sigma keeps every channel in its pw1 group and rho keeps every column in its pw2 group.
    """
    n = mid // groups
    pw1_block = mid // first_groups
    # The official shuffle (after the dw conv) is channel_shuffle with n groups: channel c reaches pw2 column
    # official_lands[c]. Ours runs before the dw conv: our pw1 output i reaches pw2 column our_lands[i].
    official_lands = torch.argsort(shuffle_sources(mid, n))
    our_reads = shuffle_sources(mid, our_shuffle_groups)
    our_lands = torch.argsort(our_reads)
    official_types = [(c // pw1_block, int(official_lands[c]) // n) for c in range(mid)]
    our_types = [(i // pw1_block, int(our_lands[i]) // n) for i in range(mid)]
    if Counter(official_types) != Counter(our_types):
        return None
    channels_of_type: dict[tuple[int, int], list[int]] = {}
    for channel, kind in enumerate(official_types):  # ascending, so each type's channels pair in sorted order
        channels_of_type.setdefault(kind, []).append(channel)
    for channels in channels_of_type.values():
        channels.reverse()
    sigma = torch.tensor([channels_of_type[kind].pop() for kind in our_types])
    tau = sigma[our_reads]
    rho = official_lands[tau]
    return sigma, tau, rho


def permute_unit(state: dict[str, torch.Tensor], unit: str, permutations: UnitPermutations, groups: int) -> None:
    """Reorder one unit's official tensors (already under our names) by ``unit_permutations``' result."""
    sigma, tau, rho = permutations
    for layer, order in (("pw1", sigma), ("dw", tau)):
        state[f"{unit}.{layer}.conv.weight"] = state[f"{unit}.{layer}.conv.weight"][order]
        for stat in BN_STATISTICS:
            state[f"{unit}.{layer}.bn.{stat}"] = state[f"{unit}.{layer}.bn.{stat}"][order]
    weight = state[f"{unit}.pw2.conv.weight"]  # grouped: (out, n, 1, 1), output group b reads columns of group b
    out, n = weight.shape[:2]
    local_columns = (rho - torch.arange(len(rho)) // n * n).view(groups, 1, n).expand(groups, out // groups, n)
    state[f"{unit}.pw2.conv.weight"] = torch.gather(weight.view(groups, out // groups, n), 2, local_columns) \
        .view_as(weight)


def remap_units(state: dict[str, torch.Tensor], model_name: str) -> tuple[dict[str, Any], list[str]]:
    """Permute the official unit weights in place for our paper-order units; where some unit admits no
    permutation, keep megvii's order in the model instead (``shuffle_order="official"``). Returns the model
    arguments and a note saying which was done."""
    with torch.device("meta"):
        model = build_model(model_name)
    units = [(f"features.{name}", unit) for name, unit in model.features.named_modules()
             if name.count(".") == 1 and name.startswith("stage")]
    layouts = [(name, unit.pw1.conv.out_channels, unit.pw2.conv.groups, unit.pw1.conv.groups) for name, unit in units]
    paper = [unit_permutations(mid, g, g1, g) for _, mid, g, g1 in layouts]
    if all(p is not None for p in paper):
        for (name, _, groups, _), permutations in zip(layouts, paper):
            permute_unit(state, name, permutations, groups)
        return {}, ["paper channel order: pw1, dw and pw2 weights permuted within their groups (docs/weights.md)"]
    for name, mid, groups, first_groups in layouts:
        permute_unit(state, name, unit_permutations(mid, groups, first_groups, mid // groups), groups)
    widths = sorted({mid for (_, mid, *_), p in zip(layouts, paper) if p is None})
    return {"shuffle_order": "official"}, [
        f"official channel order (shuffle_order='official'): bottleneck widths {widths} at g={layouts[0][2]} admit "
        f"no within-group permutation into the paper's order (docs/weights.md); dw weights permuted"
    ]


def rename(state: dict[str, torch.Tensor]) -> Renamed:
    renamed, unknown = rename_each(state, rename_key)
    return Renamed(renamed, unknown, f"shufflenet_v1_*_g{group_count(renamed)}", PREPROCESSING,
                   "The official checkpoints are ShuffleNet V1 g = 3 and 8 at 0.5x, 1.0x, 1.5x and 2.0x.")
