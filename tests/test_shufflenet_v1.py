import math

import pytest
import torch
import torch.nn.functional as F
from conftest import OFFICIAL_WIDTHS, count

from shufflenet import ChannelShuffle, create_model
from shufflenet.models import ShuffleNetV1, ShuffleUnit, shufflenet_v1_widths
from shufflenet.models.layers import SqueezeExcite


@pytest.mark.parametrize("groups,scale", sorted(OFFICIAL_WIDTHS))
def test_widths_reproduce_official_table(groups, scale):
    assert shufflenet_v1_widths(scale, groups) == OFFICIAL_WIDTHS[groups, scale]


def hand_count(stem, widths, repeats, groups, resolution=224, classes=1000):
    """Multiply-adds from the paper's unit formula, written independently of the model code.

    Stride-1 units cost hw(2cm/g + 9m) (Sec. 3.2); a stride-2 unit's 1x1 GConv runs at the input size, its
    depthwise conv and second GConv (out - in channels) at the output size. Stage 2's first 1x1 conv is dense.
    """
    size = math.ceil(resolution / 2)
    macs = size * size * stem * 3 * 9
    size = math.ceil(size / 2)
    c_in = stem
    for stage, (c, n) in enumerate(zip(widths, repeats)):
        m = c // 4
        for i in range(n):
            if i == 0:
                g1 = 1 if stage == 0 else groups
                out = math.ceil(size / 2)
                macs += size * size * c_in * m // g1 + out * out * (9 * m + m * (c - c_in) // groups)
                size = out
            else:
                macs += size * size * (2 * c * m // groups + 9 * m)
        c_in = c
    return macs + widths[-1] * classes


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0, 1.5, 2.0])
def test_flop_counter_agrees_with_paper_unit_formula(groups, scale):
    stem, *widths = shufflenet_v1_widths(scale, groups)
    name = f"shufflenet_v1_x{str(scale).replace('.', '_')}_g{groups}"
    assert count(name).macs == hand_count(stem, widths, (4, 8, 4), groups)


def test_flop_counter_agrees_at_other_resolutions():
    for resolution in (160, 97):
        assert count("shufflenet_v1_x1_0_g3", resolution).macs == hand_count(24, (240, 480, 960), (4, 8, 4), 3,
                                                                             resolution)


# Official README (FLOPs M, params M) and the notes' exact count of the official architecture
# (multiply-adds including the FC; parameters = conv + BN affine + bias-free FC).
OFFICIAL_COMPLEXITY = {
    "shufflenet_v1_x0_5_g3": (38, 0.7, 37_589_856, 717_324),
    "shufflenet_v1_x1_0_g3": (137, 1.9, 137_460_672, 1_864_728),  # README prints 138, Table 1 137
    "shufflenet_v1_x1_5_g3": (292, 3.4, 292_443_552, 3_441_168),
    "shufflenet_v1_x2_0_g3": (524, 5.4, 524_045_184, 5_449_776),
    "shufflenet_v1_x0_5_g8": (40, 1.0, 40_469_760, 1_010_448),
    "shufflenet_v1_x1_0_g8": (138, 2.4, 138_365_952, 2_433_768),
    "shufflenet_v1_x1_5_g8": (290, 4.3, 290_188_800, 4_268_952),
    "shufflenet_v1_x2_0_g8": (522, 6.5, 521_942_016, 6_521_232),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COMPLEXITY))
def test_official_configs_match_published_complexity(name):
    mflops, params_m, exact_macs, exact_params = OFFICIAL_COMPLEXITY[name]
    cost = count(name)
    assert round(cost.macs / 1e6) == mflops
    assert round(cost.params / 1e6, 1) == params_m
    assert (cost.macs, cost.params) == (exact_macs, exact_params)


def test_official_readme_1x_g3_within_half_percent():
    assert abs(count("shufflenet_v1_x1_0_g3").mflops - 138) / 138 < 0.005


@pytest.mark.parametrize("groups,published", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_table1_complexity_within_1_5_percent(groups, published):
    assert abs(count(f"shufflenet_v1_x1_0_g{groups}").mflops - published) / published < 0.015


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_scaled_models_stay_near_paper_complexity(groups):
    # Table 2: 0.5x is 38 MFLOPs and 0.25x 13 MFLOPs for every g; our rounding rule stays within 8% at 0.5x
    # (the official 0.5x g=8 itself is 40.5) and within 25% at 0.25x.
    assert abs(count(f"shufflenet_v1_x0_5_g{groups}").mflops - 38) / 38 < 0.08
    assert abs(count(f"shufflenet_v1_x0_25_g{groups}").mflops - 13) / 13 < 0.25


def test_every_group_conv_is_valid_for_every_registered_scale():
    for name in ("shufflenet_v1_x0_25_g4", "shufflenet_v1_x0_5_g2", "shufflenet_v1_x1_5_g4", "shufflenet_v1_x0_25_g8"):
        model = create_model(name)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                assert module.in_channels % module.groups == 0 and module.out_channels % module.groups == 0


def conv_layers_on_main_path(model):
    return sum(1 for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".se." not in n) + 1


def test_layer_counts_and_shallow_variant():
    assert conv_layers_on_main_path(create_model("shufflenet_v1_x1_0_g3")) == 50  # Table 5 text: 50 layers
    shallow = create_model("shufflenet_v1_x0_5_g3_shallow")
    assert conv_layers_on_main_path(shallow) == 26
    assert [len(getattr(shallow.features, f"stage{s}")) for s in (2, 3, 4)] == [2, 4, 2]
    assert abs(count("shufflenet_v1_x0_5_g3_shallow").mflops - 40) / 40 < 0.05  # Table 5: 40 MFLOPs


def test_se_variant():
    model = create_model("shufflenet_v1_x2_0_g3_se")
    units = [m for m in model.modules() if isinstance(m, ShuffleUnit)]
    assert len(units) == 16 and all(isinstance(u.se, SqueezeExcite) for u in units)
    assert abs(count("shufflenet_v1_x2_0_g3_se").mflops - 527) / 527 < 0.005  # Table 5: 527 MFLOPs


def reference_unit_forward(unit: ShuffleUnit, x: torch.Tensor, groups: int, shuffle: bool) -> torch.Tensor:
    """The unit written with functional ops and the paper's index formula for the shuffle."""
    def conv_bn(block, t, stride=1, padding=0):
        t = F.conv2d(t, block.conv.weight, None, stride, padding, groups=block.conv.groups)
        bn = block.bn
        return (t - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps) \
            * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]

    out = F.relu(conv_bn(unit.pw1, x))
    if shuffle:
        n = out.shape[1] // groups
        out = out[:, [(j % groups) * n + j // groups for j in range(out.shape[1])]]
    out = conv_bn(unit.dw, out, unit.stride, 1)
    out = conv_bn(unit.pw2, out)
    if unit.stride == 1:
        return F.relu(out + x)
    return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), out], 1))


@pytest.mark.parametrize("stride,in_ch,out_ch", [(1, 48, 48), (2, 24, 96), (2, 48, 96)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_unit_matches_reference_forward(stride, in_ch, out_ch, shuffle):
    unit = ShuffleUnit(in_ch, out_ch, stride, groups=3, shuffle=shuffle).eval()
    for module in unit.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    x = torch.randn(2, in_ch, 8, 8)
    y = unit(x)
    assert y.shape == (2, out_ch, 8 // stride, 8 // stride)
    torch.testing.assert_close(y, reference_unit_forward(unit, x, 3, shuffle), rtol=1e-4, atol=1e-5)


def test_shuffle_false_changes_only_the_shuffle():
    with_shuffle = create_model("shufflenet_v1_x0_5_g3").eval()
    without = create_model("shufflenet_v1_x0_5_g3", shuffle=False).eval()
    without.load_state_dict(with_shuffle.state_dict())  # identical parameters and buffers
    assert sum(isinstance(m, ChannelShuffle) for m in with_shuffle.modules()) == 16
    assert not any(isinstance(m, ChannelShuffle) for m in without.modules())
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(with_shuffle(x), without(x))
    assert count("shufflenet_v1_x0_5_g3", shuffle=False).macs == count("shufflenet_v1_x0_5_g3").macs


@pytest.mark.parametrize("name,kwargs,size", [
    ("shufflenet_v1_x0_5_g3", {}, 64),
    ("shufflenet_v1_x0_25_g8", {"small_input": True}, 32),
    ("shufflenet_v1_x0_5_g3_shallow", {"se": True}, 64),
])
def test_gradients_reach_every_parameter(name, kwargs, size):
    # zero_init_last starts some BN scales at 0, which blocks the gradient of their branch at step 0 only.
    model = create_model(name, num_classes=10, zero_init_last=False, **kwargs)
    loss = F.cross_entropy(model(torch.randn(2, 3, size, size)), torch.tensor([1, 2]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_zero_init_last_makes_stride1_units_start_as_identity():
    model = create_model("shufflenet_v1_x0_5_g3").eval()
    unit = model.features.stage3[1]
    x = torch.relu(torch.randn(2, 240, 8, 8))  # unit inputs are post-ReLU
    torch.testing.assert_close(unit(x), x)
    assert all(model.features.stage3[0].pw2.bn.weight == 1)  # stride-2 units keep their branch


def test_small_input_stem_only_changes_the_stem():
    small = create_model("shufflenet_v1_x0_5_g3", small_input=True, num_classes=10)
    plain = create_model("shufflenet_v1_x0_5_g3", num_classes=10)
    assert small.features.stem.conv.stride == (1, 1) and isinstance(small.features.pool, torch.nn.Identity)
    small_shapes = {k: v.shape for k, v in small.state_dict().items()}
    assert small_shapes == {k: v.shape for k, v in plain.state_dict().items()}
    assert small.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 480, 4, 4)
    assert [i.reduction for i in small.feature_info] == [1, 2, 4, 8]


def test_any_resolution_and_too_small_input():
    model = create_model("shufflenet_v1_x0_5_g3", num_classes=7).eval()
    for size in (97, 160, (64, 96)):
        h, w = (size, size) if isinstance(size, int) else size
        assert model(torch.randn(1, 3, h, w)).shape == (1, 7)
    with pytest.raises(ValueError, match="smaller than the network's total stride 32.*small_input=True"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("kwargs,message", [
    ({"groups": 5}, "groups in \\[1, 2, 3, 4, 8\\]"),
    ({"groups": 3, "scale": 0.3}, "scale must be one of"),
    ({"groups": 3, "widths": (12, 100, 200, 400)}, "multiple of 12"),
    ({"groups": 8, "widths": (12, 192, 384, 768)}, "stem width 12 is not a multiple of groups=8"),
    ({"groups": 3, "repeats": (4, 8)}, "3 positive repeats"),
])
def test_bad_configurations_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShuffleNetV1(**kwargs)


def test_bad_unit_configurations():
    with pytest.raises(ValueError, match="in and out widths must match"):
        ShuffleUnit(48, 96, stride=1, groups=3)
    with pytest.raises(ValueError, match="must exceed"):
        ShuffleUnit(96, 96, stride=2, groups=3)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        ShuffleUnit(48, 48, stride=3, groups=3)
