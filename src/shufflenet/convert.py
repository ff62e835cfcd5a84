"""Official checkpoints into our weight files: megvii ShuffleNet V1, torchvision MobileNet V2, timm MobileNet V1/V2.

Each source's tensors are renamed to our keys; the registered model whose tensor shapes they fit is found (or
checked, with ``model_name``); ShuffleNet's channel order is remapped (docs/weights.md). The result must load
into that model with every tensor fitting before ``save_weights`` writes anything.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .models.shufflenet_v1 import STAGE_REPEATS
from .ops import channel_shuffle
from .preprocessing import IMAGENET, Preprocessing
from .registry import create_model, get_model_spec, list_models
from .weights import compare_tensors, listing, read_checkpoint, save_weights, shapes, unwrap_state_dict

SOURCE_FORMATS = ("megvii", "torchvision", "timm")
# A key that every state dict of each source has: tells a wrong --from apart from a broken file.
SIGNATURE_KEYS = {"megvii": "first_conv.0.weight", "torchvision": "features.0.0.weight", "timm": "conv_stem.weight"}
BN_STATISTICS = ("weight", "bias", "running_mean", "running_var")  # per-channel BN tensors
UnitPermutations = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (sigma, tau, rho), see unit_permutations

# megvii train.py: ToBGRTensor (BGR, 0-255, no mean/std); OpencvResize(256) (cv2 INTER_LINEAR) + CenterCrop(224).
MEGVII_PREPROCESSING = Preprocessing("BGR", 255.0, None, None, resize=256, crop=224, interpolation="bilinear")
# torchvision MobileNet_V2_Weights.IMAGENET1K_V1: resize 256, crop 224, bilinear, ImageNet mean/std (V2: resize 232).
TORCHVISION_PREPROCESSING = IMAGENET
# timm's default config: crop 224 at crop_pct 0.875 (resize 256), bicubic, ImageNet mean/std; the
# mobilenetv1_100.ra4_e3600_r224_in1k weights use the Inception mean/std (0.5, 0.5, 0.5) instead.
TIMM_V2_PREPROCESSING = Preprocessing(interpolation="bicubic")
TIMM_V1_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


@dataclass
class Conversion:
    """A converted state dict in our layout and what it is for."""

    source_format: str
    model_name: str
    model_kwargs: dict[str, Any]
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    skipped: list[str] = field(default_factory=list)  # checkpoint entries that are not model tensors
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        arguments = f", arguments {self.model_kwargs}" if self.model_kwargs else ""
        lines = [
            f"model: {self.model_name} ({self.num_classes} classes{arguments})",
            f"mapped {len(self.state_dict)} tensors; skipped: {', '.join(self.skipped) or 'none'}",
            *(f"note: {note}" for note in self.notes),
            f"preprocessing: {self.preprocessing.describe()}",
        ]
        return "\n".join(lines)


# --- renaming: one function per source, returning (renamed state, keys it does not know) ---

def rename_each(state: dict[str, torch.Tensor], rename: Callable[[str], str | None]) -> tuple[dict, list[str]]:
    renamed, unknown = {}, []
    for key, tensor in state.items():
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = tensor
    return renamed, unknown


MEGVII_UNIT = re.compile(r"features\.(\d+)\.branch_main_([12])\.(\d)\.(\w+)$")
# Official blocks.py: branch_main_1 = [pw conv, BN, ReLU, dw conv, BN], branch_main_2 = [pw conv, BN].
MEGVII_LAYERS = {("1", "0"): "pw1.conv", ("1", "1"): "pw1.bn", ("1", "3"): "dw.conv", ("1", "4"): "dw.bn",
                 ("2", "0"): "pw2.conv", ("2", "1"): "pw2.bn"}
MEGVII_PLAIN = {"first_conv.0.": "features.stem.conv.", "first_conv.1.": "features.stem.bn.",
                "classifier.0.": "classifier."}


def megvii_unit_name(index: int) -> str | None:
    """Official ``features.{index}`` (16 units, Stage 2 = 0-3, Stage 3 = 4-11, Stage 4 = 12-15) -> our unit."""
    for stage, repeats in enumerate(STAGE_REPEATS, start=2):
        if index < repeats:
            return f"features.stage{stage}.{index}"
        index -= repeats
    return None


def megvii_groups(state: dict[str, torch.Tensor]) -> str:
    """g from the first unit's shapes: pw1 gives m outputs, grouped pw2 reads m / g inputs per group ('*' when
    the tensors are missing, which the model matching then reports)."""
    pw1, pw2 = (state.get(f"features.stage2.0.{layer}.conv.weight") for layer in ("pw1", "pw2"))
    return "*" if pw1 is None or pw2 is None else str(pw1.shape[0] // pw2.shape[1])


def megvii_key(key: str) -> str | None:
    for prefix, ours in MEGVII_PLAIN.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    match = MEGVII_UNIT.match(key)
    if not match:
        return None
    unit, layer = megvii_unit_name(int(match[1])), MEGVII_LAYERS.get((match[2], match[3]))
    return None if unit is None or layer is None else f"{unit}.{layer}.{match[4]}"


TV_CONV_BN = re.compile(r"features\.(\d+)\.([01])\.(\w+)$")  # stem and last 1x1: [conv, BN, ReLU6]
TV_NESTED = re.compile(r"features\.(\d+)\.conv\.(\d+)\.([01])\.(\w+)$")  # expand / depthwise [conv, BN, ReLU6]
TV_FLAT = re.compile(r"features\.(\d+)\.conv\.(\d+)\.(\w+)$")  # the projection conv, then its BN


def rename_torchvision(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """torchvision MobileNetV2: features.N.conv = [ConvBNReLU6 (expand, absent for t = 1), ConvBNReLU6 (dw),
    Conv2d (project), BatchNorm2d]; features.0 / features.18 = [conv, BN, ReLU6]; classifier = [Dropout, Linear]."""
    projections = {
        (m[1], int(m[2])) for key, tensor in state.items() if (m := TV_FLAT.match(key)) and tensor.dim() == 4
    }

    def rename(key: str) -> str | None:
        if key.startswith("classifier.1."):
            return "classifier." + key[len("classifier.1."):]
        if match := TV_CONV_BN.match(key):
            return f"features.{match[1]}.{('conv', 'bn')[int(match[2])]}.{match[3]}"
        if match := TV_NESTED.match(key):
            return f"features.{match[1]}.conv.{match[2]}.{('conv', 'bn')[int(match[3])]}.{match[4]}"
        if match := TV_FLAT.match(key):
            block, index = match[1], int(match[2])
            if (block, index) in projections:
                return f"features.{block}.conv.{index}.conv.{match[3]}"
            if (block, index - 1) in projections:
                return f"features.{block}.conv.{index - 1}.bn.{match[3]}"
        return None

    return rename_each(state, rename)


TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$")
# timm _efficientnet_blocks: InvertedResidual = conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3;
# DepthwiseSeparableConv = conv_dw, bn1, conv_pw, bn2 (MobileNet V2's first block, and every MobileNet V1 block).
TIMM_INVERTED_RESIDUAL = {"conv_pw": "conv.0.conv", "bn1": "conv.0.bn", "conv_dw": "conv.1.conv",
                          "bn2": "conv.1.bn", "conv_pwl": "conv.2.conv", "bn3": "conv.2.bn"}
TIMM_V2_SEPARABLE = {"conv_dw": "conv.0.conv", "bn1": "conv.0.bn", "conv_pw": "conv.1.conv", "bn2": "conv.1.bn"}
TIMM_V1_SEPARABLE = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "pw.conv", "bn2": "pw.bn"}


def timm_is_mobilenet_v2(state: dict[str, torch.Tensor]) -> bool:
    return any(".conv_pwl." in key for key in state)


def rename_timm(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """timm EfficientNet-class models: conv_stem + bn1, blocks.{stage}.{index}, conv_head + bn2 (MobileNet V2
    only), classifier. Our features number the blocks in order after the stem."""
    is_v2 = timm_is_mobilenet_v2(state)
    if not is_v2 and "conv_head.weight" in state:
        raise ValueError(
            "this timm MobileNet V1 has a 1x1 head conv ('conv_head', the mobilenetv1_*h variants) between the last "
            "block and the pool; MobileNet V1 has no such layer, so no weights of ours can hold it. "
            "Use timm's mobilenetv1_100 weights instead"
        )
    blocks = sorted({(int(m[1]), int(m[2])) for key in state if (m := TIMM_BLOCK.match(key))})
    position = {block: index for index, block in enumerate(blocks, start=1)}
    inverted = {(int(m[1]), int(m[2])) for key in state if (m := TIMM_BLOCK.match(key)) and m[3] == "conv_pwl"}
    plain = {"conv_stem.": "features.0.conv.", "bn1.": "features.0.bn.", "classifier.": "classifier.",
             "conv_head.": f"features.{len(blocks) + 1}.conv.", "bn2.": f"features.{len(blocks) + 1}.bn."}

    def rename(key: str) -> str | None:
        for prefix, ours in plain.items():
            if key.startswith(prefix) and key.count(".") == 1:
                return ours + key[len(prefix):]
        match = TIMM_BLOCK.match(key)
        if not match:
            return None
        block = (int(match[1]), int(match[2]))
        layers = TIMM_V1_SEPARABLE if not is_v2 else TIMM_INVERTED_RESIDUAL if block in inverted else TIMM_V2_SEPARABLE
        layer = layers.get(match[3])
        return None if layer is None else f"features.{position[block]}.{layer}.{match[4]}"

    return rename_each(state, rename)


# --- ShuffleNet V1: the official channel order (docs/weights.md) ---

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


def remap_shufflenet_units(state: dict[str, torch.Tensor], model_name: str) -> tuple[dict[str, Any], list[str]]:
    """Permute the official unit weights in place for our paper-order units; where some unit admits no
    permutation, keep megvii's order in the model instead (``shuffle_order="official"``). Returns the model
    arguments and a note saying which was done."""
    with torch.device("meta"):
        model = create_model(model_name)
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


# --- matching the renamed tensors to a registered model ---

def find_model(
    state: dict[str, torch.Tensor], pattern: str, kwargs: dict[str, Any], requested: str | None, hint: str
) -> str:
    """The registered model (matching ``pattern``, or ``requested``) whose tensors have exactly these shapes."""
    if requested is not None:
        get_model_spec(requested)  # an unknown name: ValueError with close matches
        if requested not in list_models(pattern):
            raise ValueError(f"{requested} cannot hold these tensors: they are for {pattern} models")
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    found = shapes(state)
    problems = {}
    for name in [requested] if requested else list_models(pattern):
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, **kwargs)
        problems[name] = compare_tensors(shapes(model.state_dict()), found)
    fits = [name for name, mismatch in problems.items() if not mismatch]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ValueError(f"the tensors fit several models ({', '.join(fits)}); choose one with --model")
    if requested:
        raise ValueError(f"the tensors do not fit {requested}: {problems[requested]}")
    closest = min(problems, key=lambda name: len(problems[name]))
    raise ValueError(
        f"no registered model fits these tensors (the closest, {closest}, differs in: {problems[closest]}). {hint}"
    )


def fill_bn_counters(state: dict[str, torch.Tensor]) -> int:
    """Add the ``num_batches_tracked`` counters that some checkpoints leave out (they do not affect outputs)."""
    missing = [key[: -len("running_mean")] + "num_batches_tracked" for key in state if key.endswith(".running_mean")]
    missing = [key for key in missing if key not in state]
    for key in missing:
        state[key] = torch.tensor(0)
    return len(missing)


def convert_state_dict(checkpoint: Any, source_format: str, model_name: str | None = None) -> Conversion:
    """Convert a loaded source checkpoint (a state dict, or a dict holding one under 'state_dict' / 'model';
    ``module.`` prefixes allowed) into our layout for ``model_name`` (default: the registered model whose
    shapes the tensors fit)."""
    if source_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown source format {source_format!r}; choose one of {', '.join(SOURCE_FORMATS)}")
    state, skipped = unwrap_state_dict(checkpoint, f"the {source_format} checkpoint")
    signature = SIGNATURE_KEYS[source_format]
    if signature not in state:
        others = [name for name, key in SIGNATURE_KEYS.items() if key in state]
        hint = (f"it looks like a {others[0]} checkpoint: use --from {others[0]}" if others else
                f"its first keys are {', '.join(list(state)[:3])}")
        raise ValueError(f"this is not a {source_format} checkpoint (it has no {signature!r}); {hint}")
    kwargs: dict[str, Any] = {}
    if source_format == "megvii":
        renamed, unknown = rename_each(state, megvii_key)
        pattern, preprocessing = f"shufflenet_v1_*_g{megvii_groups(renamed)}", MEGVII_PREPROCESSING
        hint = "The official checkpoints are ShuffleNet V1 g = 3 and 8 at 0.5x, 1.0x, 1.5x and 2.0x."
    elif source_format == "torchvision":
        renamed, unknown = rename_torchvision(state)
        pattern, preprocessing = "mobilenet_v2_*", TORCHVISION_PREPROCESSING
        hint = "Only torchvision's mobilenet_v2 layout is supported, at the registered widths."
    elif timm_is_mobilenet_v2(state):
        renamed, unknown = rename_timm(state)
        pattern, preprocessing = "mobilenet_v2_*", TIMM_V2_PREPROCESSING
        hint = ("timm's mobilenetv2_110d and mobilenetv2_120d change the number of blocks per stage, which "
                "MobileNet V2 (Table 2) does not; they have no counterpart here.")
    else:
        renamed, unknown = rename_timm(state)
        pattern, preprocessing = "mobilenet_v1_*", TIMM_V1_PREPROCESSING
        kwargs = {"activation": "relu6"}  # timm builds mobilenetv1_* with ReLU6 (like TF-slim)
        hint = "timm's mobilenetv1_125 has no registered counterpart here."
    if unknown:
        raise ValueError(f"these {source_format} tensors have no place in our models: {listing(unknown)}")
    filled = fill_bn_counters(renamed)
    name = find_model(renamed, pattern, kwargs, model_name, hint)
    notes = [f"added {filled} missing BN num_batches_tracked counters (zeros)"] if filled else []
    if source_format == "megvii":
        kwargs, order_notes = remap_shufflenet_units(renamed, name)
        notes += order_notes
    num_classes = renamed["classifier.weight"].shape[0] if "classifier.weight" in renamed else 0
    return Conversion(source_format, name, kwargs, num_classes, renamed, preprocessing, skipped, notes)


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    source_format: str,
    model_name: str | None = None,
    resize: int | None = None,
) -> Conversion:
    """Read ``source`` (safetensors, or a PyTorch checkpoint via ``torch.load(weights_only=True)``), convert it,
    load it into the model (every tensor must fit) and write ``destination`` with ``save_weights``. ``resize``
    overrides the recorded resize size (torchvision's IMAGENET1K_V2 weights are evaluated at 232)."""
    checkpoint, _ = read_checkpoint(source)
    try:
        conversion = convert_state_dict(checkpoint, source_format, model_name)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if resize is not None:
        conversion.preprocessing = replace(conversion.preprocessing, resize=resize)
    model = create_model(conversion.model_name, num_classes=conversion.num_classes, **conversion.model_kwargs)
    model.load_state_dict(conversion.state_dict)
    save_weights(model, destination, conversion.preprocessing, source=f"{source_format} checkpoint {Path(source).name}")
    return conversion
