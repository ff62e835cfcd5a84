import torch
from torch import nn

from shufflenet import create_model, profile


def test_profile_counts_a_layer_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, groups=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 16, 1, groups=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    cost = profile(model, 32)
    expected = 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 16 * 16 * 16 * 2 + 16 * 5
    assert cost.macs == expected
    assert cost.params == (8 * 27 + 8) + (8 * 9 + 8) + (16 * 2 + 16) + (16 * 5 + 5)
    assert [layer.macs for layer in cost.layers] == [16 * 16 * 8 * 27, 16 * 16 * 8 * 9, 16 * 16 * 16 * 2, 80]


def test_breakdowns_add_up_and_meta_equals_cpu():
    cpu_model = create_model("shufflenet_v1_x0_5_g3")
    cost = profile(cpu_model)
    assert sum(s.macs for s in cost.stages) == cost.macs == sum(layer.macs for layer in cost.layers)
    assert sum(s.params for s in cost.stages) == cost.params
    assert [s.name for s in cost.stages] == ["features.stem", "features.stage2", "features.stage3", "features.stage4",
                                             "classifier"]
    with torch.device("meta"):
        meta_model = create_model("shufflenet_v1_x0_5_g3")
    assert profile(meta_model).macs == cost.macs
    assert cpu_model.training  # profiling restores the training mode


def test_profile_scales_with_resolution_squared():
    with torch.device("meta"):
        model = create_model("mobilenet_v1_x1_0")
    fc = 1024 * 1000
    assert (profile(model, 448).macs - fc) == 4 * (profile(model, 224).macs - fc)
