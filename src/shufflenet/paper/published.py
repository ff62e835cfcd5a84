"""Published complexity figures (MFLOPs = millions of multiply-adds, parameters in millions) to check ours against.

Sources: ShuffleNet paper arXiv:1707.01083 (Tables 1, 2, 5); the official megvii ShuffleNet-Series README
(ShuffleNetV1); MobileNets paper arXiv:1704.04861 (Tables 6, 7); MobileNetV2 paper arXiv:1801.04381v4 (Table 4);
TF-slim's MobileNet V2 checkpoint table (research/slim/nets/mobilenet/README.md); torchvision's MobileNet_V2 docs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedComplexity:
    source: str
    label: str  # the row as the source prints it
    model: str  # our registered name
    resolution: int
    mflops: float
    params_m: float | None = None
    note: str = ""


def _rows() -> list[PublishedComplexity]:
    rows = []
    official = {  # megvii README: (FLOPs, #Params)
        (3, "0_5"): (38, 0.7), (3, "1_0"): (138, 1.9), (3, "1_5"): (292, 3.4), (3, "2_0"): (524, 5.4),
        (8, "0_5"): (40, 1.0), (8, "1_0"): (138, 2.4), (8, "1_5"): (290, 4.3), (8, "2_0"): (522, 6.5),
    }
    for (g, scale), (mflops, params) in official.items():
        note = "README rounds up; paper Table 1 says 137" if (g, scale) == (3, "1_0") else ""
        label = f"ShuffleNetV1 {scale.replace('_', '.')}x (group={g})"
        rows.append(PublishedComplexity("megvii README", label, f"shufflenet_v1_x{scale}_g{g}", 224, mflops, params,
                                        note))
    for g, mflops in {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}.items():
        rows.append(PublishedComplexity(
            "ShuffleNet Table 1", f"1x, g = {g}", f"shufflenet_v1_x1_0_g{g}", 224, mflops,
            note="equals our count minus the FC layer",
        ))
    for scale, mflops in (("0_5", 38), ("0_25", 13)):
        for g in (1, 2, 3, 4, 8):
            rows.append(PublishedComplexity(
                "ShuffleNet Table 2", f"{scale.replace('_', '.')}x, g = {g}", f"shufflenet_v1_x{scale}_g{g}", 224,
                mflops,
                note="" if (g, scale) in ((3, "0_5"), (8, "0_5")) else "widths not published: our rounding rule",
            ))
    rows.append(PublishedComplexity(
        "ShuffleNet Table 5", "ShuffleNet 0.5x (shallow, g = 3)", "shufflenet_v1_x0_5_g3_shallow", 224, 40,
        note="widths not published: ours",
    ))
    rows.append(PublishedComplexity(
        "ShuffleNet Table 5", "ShuffleNet 2x (with SE, g = 3)", "shufflenet_v1_x2_0_g3_se", 224, 527,
        note="SE placement and ratio not published: ours",
    ))
    table4_widths = {"vgg": 50, "resnet": 192, "resnext": 192, "xception": 288}  # Sec. 4.2, at 38 MFLOPs
    labels = {"vgg": "VGG-like", "resnet": "ResNet", "xception": "Xception-like", "resnext": "ResNeXt"}
    for budget in (140, 38, 13):
        for structure, label in labels.items():
            note = f"paper Stage-4 width {table4_widths[structure]}" if budget == 38 else "widths not published"
            rows.append(PublishedComplexity("ShuffleNet Table 4", f"{label}, {budget} MFLOPs",
                                            f"table4_{structure}_{budget}m", 224, budget, note=note))
    for alpha, mflops, params in (("1_0", 569, 4.2), ("0_75", 325, 2.6), ("0_5", 149, 1.3), ("0_25", 41, 0.5)):
        label = f"{alpha.replace('_', '.')} MobileNet-224"
        rows.append(PublishedComplexity("MobileNets Table 6", label, f"mobilenet_v1_x{alpha}", 224, mflops, params))
    for resolution, mflops in ((192, 418), (160, 290), (128, 186)):
        rows.append(PublishedComplexity(
            "MobileNets Table 7", f"1.0 MobileNet-{resolution}", "mobilenet_v1_x1_0", resolution, mflops, 4.2
        ))
    rows.append(PublishedComplexity("MobileNetV2 Table 4", "MobileNetV2", "mobilenet_v2_x1_0", 224, 300, 3.4))
    rows.append(PublishedComplexity(
        "MobileNetV2 Table 4", "MobileNetV2 (1.4)", "mobilenet_v2_x1_4", 224, 585, 6.9,
        note="the released 1.4 model has 582M / 6.06M",
    ))
    rows.append(PublishedComplexity(
        "torchvision docs", "MobileNet_V2_Weights.IMAGENET1K_V1", "mobilenet_v2_x1_0", 224, 301, 3.504872
    ))
    slim_v2 = {  # TF-slim README: depth multiplier -> {resolution: (MACs, params)}; params exclude BN, 1001 classes
        "1_4": {224: (582, 6.06)},
        "1_3": {224: (509, 5.34)},
        "1_0": {224: (300, 3.47), 192: (221, 3.47), 160: (154, 3.47), 128: (99, 3.47), 96: (56, 3.47)},
        "0_75": {224: (209, 2.61), 192: (153, 2.61), 160: (107, 2.61), 128: (69, 2.61), 96: (39, 2.61)},
        "0_5": {224: (97, 1.95), 192: (71, 1.95), 160: (50, 1.95), 128: (32, 1.95), 96: (18, 1.95)},
        "0_35": {224: (59, 1.66), 192: (43, 1.66), 160: (30, 1.66), 128: (20, 1.66), 96: (11, 1.66)},
    }
    for width, by_resolution in slim_v2.items():
        for resolution, (mflops, params) in by_resolution.items():
            rows.append(PublishedComplexity(
                "TF-slim MobileNetV2 README", f"mobilenet_v2_{width.replace('_', '.')}_{resolution}",
                f"mobilenet_v2_x{width}", resolution, mflops, params,
                note="params without BN, 1001 classes",
            ))
    return rows


PUBLISHED_COMPLEXITY: tuple[PublishedComplexity, ...] = tuple(_rows())


# ShuffleNet Table 8: latency in ms on one Qualcomm Snapdragon 820 core, batch 1, at 224x224 / 480x640 /
# 720x1280, with the complexity the table prints (1x is listed at 140 MFLOPs although Table 1 gives 137).
TABLE8_RESOLUTIONS = ((224, 224), (480, 640), (720, 1280))
TABLE8_LATENCY_MS: dict[str, tuple[float, tuple[float, float, float]]] = {  # our name: (MFLOPs, latencies)
    "shufflenet_v1_x0_5_g3": (38, (15.2, 87.4, 260.1)),
    "shufflenet_v1_x1_0_g3": (140, (37.8, 222.2, 684.5)),
    "shufflenet_v1_x2_0_g3": (524, (108.8, 617.0, 1857.6)),
    "tv_alexnet": (720, (184.0, 1156.7, 3633.9)),
    "mobilenet_v1_x1_0": (569, (110.0, 612.0, 1879.2)),
}


# ShuffleNet Tables 2-5: ImageNet top-1 error (%), single 224x224 centre crop, keyed by our model names.
TABLE2_TOP1_ERR: dict[float, dict[int, float]] = {  # scale -> {g: error}
    1.0: {1: 33.6, 2: 32.7, 3: 32.6, 4: 32.8, 8: 32.4},
    0.5: {1: 45.1, 2: 44.4, 3: 43.2, 4: 41.6, 8: 42.3},
    0.25: {1: 57.1, 2: 56.8, 3: 55.0, 4: 54.2, 8: 52.7},
}
TABLE3_TOP1_ERR: dict[tuple[float, int], tuple[float, float]] = {  # (scale, g) -> (with shuffle, without)
    (1.0, 3): (32.6, 34.5), (1.0, 8): (32.4, 37.6), (0.5, 3): (43.2, 45.7), (0.5, 8): (42.3, 48.1),
    (0.25, 3): (55.0, 56.3), (0.25, 8): (52.7, 56.5),
}
# Table 4: budget (MFLOPs) -> structure -> error; VGG-like is reported at 140 only ("significantly worse").
TABLE4_TOP1_ERR: dict[int, dict[str, float | None]] = {
    140: {"vgg": 50.7, "resnet": 37.3, "xception": 33.6, "resnext": 33.3, "shufflenet": 32.4},
    38: {"vgg": None, "resnet": 48.8, "xception": 45.1, "resnext": 46.0, "shufflenet": 41.6},
    13: {"vgg": None, "resnet": 63.7, "xception": 57.1, "resnext": 65.2, "shufflenet": 52.7},
}
TABLE4_STAGE4_WIDTH_38: dict[str, int] = {"vgg": 50, "resnet": 192, "resnext": 192, "xception": 288, "shufflenet": 576}
# Table 5: rungs of matched complexity, MobileNet first: (label, our model, MFLOPs, error).
TABLE5_RUNGS: dict[str, list[tuple[str, str, int, float]]] = {
    "569/524": [("1.0 MobileNet-224", "mobilenet_v1_x1_0", 569, 29.4),
                ("ShuffleNet 2x (g = 3)", "shufflenet_v1_x2_0_g3", 524, 26.3),
                ("ShuffleNet 2x (with SE, g = 3)", "shufflenet_v1_x2_0_g3_se", 527, 24.7)],
    "325/292": [("0.75 MobileNet-224", "mobilenet_v1_x0_75", 325, 31.6),
                ("ShuffleNet 1.5x (g = 3)", "shufflenet_v1_x1_5_g3", 292, 28.5)],
    "149/140": [("0.5 MobileNet-224", "mobilenet_v1_x0_5", 149, 36.3),
                ("ShuffleNet 1x (g = 8)", "shufflenet_v1_x1_0_g8", 140, 32.4)],
    "41/38/40": [("0.25 MobileNet-224", "mobilenet_v1_x0_25", 41, 49.4),
                 ("ShuffleNet 0.5x (g = 4)", "shufflenet_v1_x0_5_g4", 38, 41.6),
                 ("ShuffleNet 0.5x (shallow, g = 3)", "shufflenet_v1_x0_5_g3_shallow", 40, 42.8)],
}
# Table 7: Faster R-CNN on COCO minival, mAP [.5, .95] (%) at the "300x" and "600x" input sizes.
TABLE7_MAP: dict[str, tuple[float, float]] = {
    "ShuffleNet 2x (g = 3)": (18.7, 25.0),
    "ShuffleNet 1x (g = 3)": (14.5, 19.8),
    "1.0 MobileNet-224 [12]": (16.4, 19.8),
    "1.0 MobileNet-224 (their impl.)": (14.9, 19.3),
}
