"""timm's MobileNet V1 / V2 checkpoints (EfficientNet-class models) renamed to our keys."""
from __future__ import annotations

import re

import torch

from ..data.preprocessing import Preprocessing
from .common import Renamed, rename_each

SIGNATURE_KEY = "conv_stem.weight"
# timm's default config: crop 224 at crop_pct 0.875 (resize 256), bicubic, ImageNet mean/std; the
# mobilenetv1_100.ra4_e3600_r224_in1k weights use the Inception mean/std (0.5, 0.5, 0.5) instead.
V2_PREPROCESSING = Preprocessing(interpolation="bicubic")
V1_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")

BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$")
# timm _efficientnet_blocks: InvertedResidual = conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3;
# DepthwiseSeparableConv = conv_dw, bn1, conv_pw, bn2 (MobileNet V2's first block, and every MobileNet V1 block).
INVERTED_RESIDUAL = {"conv_pw": "conv.0.conv", "bn1": "conv.0.bn", "conv_dw": "conv.1.conv",
                          "bn2": "conv.1.bn", "conv_pwl": "conv.2.conv", "bn3": "conv.2.bn"}
V2_SEPARABLE = {"conv_dw": "conv.0.conv", "bn1": "conv.0.bn", "conv_pw": "conv.1.conv", "bn2": "conv.1.bn"}
V1_SEPARABLE = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "pw.conv", "bn2": "pw.bn"}


def is_mobilenet_v2(state: dict[str, torch.Tensor]) -> bool:
    return any(".conv_pwl." in key for key in state)


def rename_keys(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """timm EfficientNet-class models: conv_stem + bn1, blocks.{stage}.{index}, conv_head + bn2 (MobileNet V2
    only), classifier. Our features number the blocks in order after the stem."""
    is_v2 = is_mobilenet_v2(state)
    if not is_v2 and "conv_head.weight" in state:
        raise ValueError(
            "this timm MobileNet V1 has a 1x1 head conv ('conv_head', the mobilenetv1_*h variants) between the last "
            "block and the pool; MobileNet V1 has no such layer, so no weights of ours can hold it. "
            "Use timm's mobilenetv1_100 weights instead"
        )
    blocks = sorted({(int(m[1]), int(m[2])) for key in state if (m := BLOCK.match(key))})
    position = {block: index for index, block in enumerate(blocks, start=1)}
    inverted = {(int(m[1]), int(m[2])) for key in state if (m := BLOCK.match(key)) and m[3] == "conv_pwl"}
    plain = {"conv_stem.": "features.0.conv.", "bn1.": "features.0.bn.", "classifier.": "classifier.",
             "conv_head.": f"features.{len(blocks) + 1}.conv.", "bn2.": f"features.{len(blocks) + 1}.bn."}

    def rename(key: str) -> str | None:
        for prefix, ours in plain.items():
            if key.startswith(prefix) and key.count(".") == 1:
                return ours + key[len(prefix):]
        match = BLOCK.match(key)
        if not match:
            return None
        block = (int(match[1]), int(match[2]))
        layers = V1_SEPARABLE if not is_v2 else INVERTED_RESIDUAL if block in inverted else V2_SEPARABLE
        layer = layers.get(match[3])
        return None if layer is None else f"features.{position[block]}.{layer}.{match[4]}"

    return rename_each(state, rename)


def rename(state: dict[str, torch.Tensor]) -> Renamed:
    renamed, unknown = rename_keys(state)
    if is_mobilenet_v2(state):
        return Renamed(renamed, unknown, "mobilenet_v2_*", V2_PREPROCESSING,
                       "timm's mobilenetv2_110d and mobilenetv2_120d change the number of blocks per stage, which "
                       "MobileNet V2 (Table 2) does not; they have no counterpart here.")
    return Renamed(renamed, unknown, "mobilenet_v1_*", V1_PREPROCESSING,
                   "timm's mobilenetv1_125 has no registered counterpart here.",
                   {"activation": "relu6"})  # timm builds mobilenetv1_* with ReLU6 (like TF-slim)
