"""Model families, one file each, the names they register, and the torchvision reference models."""
from __future__ import annotations

from . import reference
from .builder import FeatureInfo, ImageClassifier, Layer
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .registry import build_model, list_models, model_spec, register_model, scale_tag
from .shufflenet_v1 import STAGE2_WIDTH_1X, STEM_WIDTH, ShuffleNetV1, ShuffleUnit, shufflenet_v1_widths
from .structures import TABLE4_WIDTHS, ComparisonNet

# Table 5, "ShuffleNet 0.5x (shallow, g = 3)": half the units of stages 2-4 (26 layers). Widths are not
# published; these raise 0.5x g=3's 120/240/480 to 180/360/720 (12-channel stem): 41.6 MFLOPs, the multiple
# of 4g = 12 closest to the paper's 40 (168 gives 37.0).
SHALLOW_X0_5_G3_WIDTHS = (12, 180, 360, 720)
SHALLOW_REPEATS = (2, 4, 2)

for _scale in sorted(STEM_WIDTH):
    for _groups in sorted(STAGE2_WIDTH_1X):
        register_model(f"shufflenet_v1_{scale_tag(_scale)}_g{_groups}", ShuffleNetV1, groups=_groups, scale=_scale)
register_model(
    "shufflenet_v1_x0_5_g3_shallow", ShuffleNetV1, groups=3, widths=SHALLOW_X0_5_G3_WIDTHS, repeats=SHALLOW_REPEATS
)
register_model("shufflenet_v1_x2_0_g3_se", ShuffleNetV1, groups=3, scale=2.0, se=True)  # Table 5, "with SE"
for _alpha in (1.0, 0.75, 0.5, 0.25):  # MobileNet V1 Table 6
    register_model(f"mobilenet_v1_{scale_tag(_alpha)}", MobileNetV1, alpha=_alpha)
for _width in (1.4, 1.3, 1.0, 0.75, 0.5, 0.35):  # the released MobileNet V2 checkpoints
    register_model(f"mobilenet_v2_{scale_tag(_width)}", MobileNetV2, width_mult=_width)
for _structure, _budgets in TABLE4_WIDTHS.items():  # Table 4's comparison structures at 140 / 38 / 13 MFLOPs
    for _budget, _widths in _budgets.items():
        register_model(f"table4_{_structure}_{_budget}m", ComparisonNet, structure=_structure, widths=_widths)

__all__ = [
    "ComparisonNet", "FeatureInfo", "ImageClassifier", "Layer", "MobileNetV1", "MobileNetV2", "ShuffleNetV1",
    "ShuffleUnit",
    "build_model", "list_models", "model_spec", "reference", "register_model", "shufflenet_v1_widths",
]
