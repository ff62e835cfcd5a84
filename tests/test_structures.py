"""The Table 4 comparison structures: what each unit is, and that each costs what its ShuffleNet counterpart
costs (within 5%, at 224x224, as the paper compares them)."""
import pytest
import torch
from conftest import count
from torch import nn

from shufflenet import create_model
from shufflenet.models.shufflenet_v1 import ShuffleUnit
from shufflenet.models.structures import STRUCTURES, TABLE4_BUDGETS, TABLE4_WIDTHS, Bottleneck, VGGBlock
from shufflenet.paper.published import TABLE4_STAGE4_WIDTH_38


@pytest.mark.parametrize("budget", sorted(TABLE4_BUDGETS))
@pytest.mark.parametrize("structure", STRUCTURES)
def test_each_structure_costs_what_its_shufflenet_costs(structure, budget):
    ours = count(f"table4_{structure}_{budget}m").mflops
    shufflenet = count(TABLE4_BUDGETS[budget]).mflops
    assert abs(ours - shufflenet) / shufflenet < 0.05, (ours, shufflenet)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_stage4_widths_at_38_mflops_are_the_papers(structure):
    assert TABLE4_WIDTHS[structure][38][3] == TABLE4_STAGE4_WIDTH_38[structure]
    assert create_model(TABLE4_BUDGETS[38]).widths[3] == TABLE4_STAGE4_WIDTH_38["shufflenet"]


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_the_units_are_what_sec_4_2_says():
    vgg = create_model("table4_vgg_38m").features.stage3
    assert all(isinstance(u, VGGBlock) for u in vgg)
    assert [c.kernel_size for c in convs(vgg[1])] == [(3, 3), (3, 3)]  # two 3x3 convolutions, no shortcut
    x = torch.randn(1, vgg[1][0].conv.in_channels, 8, 8)
    vgg[1].eval()
    assert not torch.allclose(vgg[1](x), torch.relu(x + vgg[1](x)))
    resnet = create_model("table4_resnet_38m").features.stage3[1]
    assert isinstance(resnet, Bottleneck) and [c.groups for c in convs(resnet)] == [1, 1, 1]
    assert resnet.pw1.conv.out_channels * 4 == resnet.pw2.conv.out_channels  # bottleneck ratio 1:4
    resnext = create_model("table4_resnext_38m").features.stage3[1]
    assert [c.groups for c in convs(resnext)] == [1, 16, 1]  # cardinality 16
    assert resnext.pw1.conv.out_channels * 2 == resnext.pw2.conv.out_channels  # bottleneck ratio 1:2
    xception = create_model("table4_xception_38m").features.stage3[1]
    assert isinstance(xception, ShuffleUnit) and isinstance(xception.shuffle, nn.Identity)
    assert [c.groups for c in convs(xception)] == [1, xception.dw.conv.out_channels, 1]  # dense 1x1, depthwise 3x3


@pytest.mark.parametrize("name", [f"table4_{s}_13m" for s in STRUCTURES])
def test_residual_units_start_as_the_identity_and_train(name):
    model = create_model(name, num_classes=10, small_input=True)
    unit = model.features.stage2[1]
    if not isinstance(unit, VGGBlock):
        unit.eval()
        x = torch.relu(torch.randn(2, unit.pw1.conv.in_channels, 8, 8))
        torch.testing.assert_close(unit(x), x)  # zero-initialised last BN: relu(x + 0) = x for x >= 0
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss) and model.features.stem.conv.weight.grad.abs().sum() > 0
