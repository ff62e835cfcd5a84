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


def conv_bn(layer: nn.Module, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """One conv -> BN (-> ReLU) layer in eval mode, written with torch.nn.functional from its parameters."""
    conv, bn = layer.conv, layer.bn
    y = nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, groups=conv.groups)
    y = nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return torch.relu(y) if relu else y


def randomise_bn(module: nn.Module) -> None:
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
        bn.bias.data.normal_()


def test_the_units_are_what_sec_4_2_says():
    vgg = create_model("table4_vgg_38m").features.stage3
    assert all(isinstance(u, VGGBlock) for u in vgg)
    assert [c.kernel_size for c in convs(vgg[1])] == [(3, 3), (3, 3)]  # two 3x3 convolutions, no shortcut
    block = vgg[1].eval()
    randomise_bn(block)
    x = torch.randn(1, block[0].conv.in_channels, 8, 8)
    torch.testing.assert_close(block(x), conv_bn(block[1], conv_bn(block[0], x)))  # the plain chain: no x added
    resnet = create_model("table4_resnet_38m").features.stage3[1]
    assert isinstance(resnet, Bottleneck) and [c.groups for c in convs(resnet)] == [1, 1, 1]
    resnet.eval()
    randomise_bn(resnet)
    x = torch.randn(1, resnet.pw1.conv.in_channels, 8, 8)
    main = conv_bn(resnet.pw2, conv_bn(resnet.conv, conv_bn(resnet.pw1, x)), relu=False)
    torch.testing.assert_close(resnet(x), torch.relu(x + main))  # the identity shortcut at stride 1
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
    # Real steps: every weight of the unit moves (it does not stay the identity: its zero-initialised BN is not
    # cut off from the loss) and the model fits a fixed batch.
    model.train()
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8)
    before = {n: p.detach().clone() for n, p in unit.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert [n for n, p in unit.named_parameters() if torch.equal(p, before[n])] == []
    assert losses[-1] < losses[0] - 0.2, losses  # (from 2.3 = ln 10: the slowest, VGG, reaches about 1.9)
