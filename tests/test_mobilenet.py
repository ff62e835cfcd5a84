import pytest
import torch
import torchvision
from conftest import count

from shufflenet import create_model, profile
from shufflenet.models import MobileNetV1, MobileNetV2


@pytest.mark.parametrize("alpha,mflops,params_m", [("1_0", 569, 4.2), ("0_75", 325, 2.6), ("0_5", 149, 1.3),
                                                    ("0_25", 41, 0.5)])
def test_mobilenet_v1_table6(alpha, mflops, params_m):
    cost = count(f"mobilenet_v1_x{alpha}")
    assert round(cost.mflops) == mflops
    assert round(cost.params / 1e6, 1) == params_m


@pytest.mark.parametrize("resolution,mflops", [(192, 418), (160, 290), (128, 186)])
def test_mobilenet_v1_table7_resolution(resolution, mflops):
    cost = count("mobilenet_v1_x1_0", resolution)
    assert abs(cost.mflops - mflops) / mflops < 0.005
    assert round(cost.params / 1e6, 1) == 4.2  # resolution does not change the parameters


def test_mobilenet_v1_exact_counts():
    # TF-slim docstring: body (no logits) 3,185,088 params and 567,716,352 MACs; plus FC 1024x1000 with bias
    # and BN scale + shift on 10,944 channels.
    cost = count("mobilenet_v1_x1_0")
    assert cost.macs == 567_716_352 + 1024 * 1000
    assert cost.params == 3_185_088 + 1024 * 1000 + 1000 + 2 * 10_944


def test_mobilenet_v1_structure():
    model = create_model("mobilenet_v1_x1_0")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 28  # Sec. 4: 28 layers counting depthwise and pointwise separately
    assert all(isinstance(m, torch.nn.ReLU) for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 27
    # Table 1's typo: the last depthwise conv runs at stride 1, so a 224 input ends at 7x7.
    assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1024, 7, 7)


def test_mobilenet_v1_any_alpha():
    model = MobileNetV1(alpha=0.6, num_classes=5)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert model.features[0].conv.out_channels == int(32 * 0.6)
    with pytest.raises(ValueError, match="must be positive"):
        MobileNetV1(alpha=0)


@pytest.mark.parametrize("width", [1.4, 1.3, 1.0, 0.75, 0.5, 0.35])
def test_mobilenet_v2_matches_torchvision_counts(width):
    """torchvision's MobileNetV2 is an independent implementation of the same network."""
    ours = count(f"mobilenet_v2_x{str(width).replace('.', '_')}")
    with torch.device("meta"):
        reference = profile(torchvision.models.mobilenet_v2(width_mult=width))
    assert (ours.macs, ours.params) == (reference.macs, reference.params)


def test_mobilenet_v2_published_1_0():
    cost = count("mobilenet_v2_x1_0")
    assert cost.params == 3_504_872  # torchvision docs, 1000 classes
    assert round(cost.mflops) == 301 and abs(cost.mflops - 300) / 300 < 0.005  # paper: 300M


# TF-slim MobileNet V2 checkpoint table: (depth multiplier, resolution) -> million MACs.
SLIM_V2_MACS = {
    (1.4, 224): 582, (1.3, 224): 509,
    (1.0, 224): 300, (1.0, 192): 221, (1.0, 160): 154, (1.0, 128): 99, (1.0, 96): 56,
    (0.75, 224): 209, (0.75, 192): 153, (0.75, 160): 107, (0.75, 128): 69, (0.75, 96): 39,
    (0.5, 224): 97, (0.5, 192): 71, (0.5, 160): 50, (0.5, 128): 32, (0.5, 96): 18,
    (0.35, 224): 59, (0.35, 192): 43, (0.35, 160): 30, (0.35, 128): 20, (0.35, 96): 11,
}


@pytest.mark.parametrize("width,resolution", sorted(SLIM_V2_MACS))
def test_mobilenet_v2_checkpoint_table(width, resolution):
    # The README prints the MACs of a 1001-class model truncated to whole millions. Our 1000-class count plus
    # one more FC row reproduces every entry exactly. Our own count is within 2% of the printed figure from
    # 50M up; below, truncation alone moves a figure by more (0.35 at 96 is 11.93M, printed 11).
    cost = count(f"mobilenet_v2_x{str(width).replace('.', '_')}", resolution)
    published = SLIM_V2_MACS[width, resolution]
    assert int((cost.macs + cost.layers[-1].macs // 1000) / 1e6) == published
    if published >= 50:
        assert abs(cost.mflops - published) / published < 0.02


def test_mobilenet_v2_structure():
    model = MobileNetV2()
    blocks = [b for b in model.features if hasattr(b, "use_residual")]
    assert len(blocks) == 17  # Table 2: 1 + 2 + 3 + 4 + 3 + 3 + 1 bottlenecks
    # Shortcut only at stride 1 with equal widths: all but the first block of each of the 7 sequences.
    assert sum(b.use_residual for b in blocks) == 10
    assert all(isinstance(m, torch.nn.ReLU6) for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)))
    # Linear bottleneck: the projection (last conv of every block) has no activation.
    assert all(len(b.conv[-1]) == 2 for b in blocks)
    # The first bottleneck (t = 1) has no expansion conv.
    assert len(blocks[0].conv) == 2 and len(blocks[1].conv) == 3
    assert MobileNetV2(width_mult=0.5).num_features == 1280 and MobileNetV2(width_mult=1.4).num_features == 1792


def test_mobilenet_v2_forward_matches_torchvision_with_the_same_weights():
    """torchvision's MobileNetV2, given our weights tensor by tensor (same order, same shapes), computes the same
    logits: shortcuts where it has them, ReLU6 and the linear bottlenecks included."""
    ours = MobileNetV2(num_classes=10).eval()
    for bn in (m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # no BN left at identity or 0
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.1)
    reference = torchvision.models.mobilenet_v2(num_classes=10).eval()
    theirs = reference.state_dict()
    assert len(theirs) == len(ours.state_dict())
    for (key, value), (_, mine) in zip(theirs.items(), ours.state_dict().items()):
        assert value.shape == mine.shape, key
        value.copy_(mine)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)
