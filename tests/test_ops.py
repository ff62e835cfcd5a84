import pytest
import torch

from shufflenet import ChannelShuffle, channel_shuffle
from shufflenet.models.layers import ConvBNAct, make_divisible


def paper_shuffle_reference(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Sec. 3.1 written as an index map: output channel j takes input channel (j % g) * n + j // g."""
    n = x.shape[1] // groups
    index = torch.tensor([(j % groups) * n + j // groups for j in range(x.shape[1])])
    return x[:, index]


@pytest.mark.parametrize("channels,groups", [(12, 3), (12, 4), (240, 3), (384, 8), (6, 6), (10, 2)])
def test_channel_shuffle_matches_paper_index_formula(channels, groups):
    x = torch.randn(2, channels, 3, 5)
    assert torch.equal(channel_shuffle(x, groups), paper_shuffle_reference(x, groups))


def test_channel_shuffle_known_permutation():
    # The notes' worked example: C = 12, g = 3 gives [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11].
    x = torch.arange(12.0).view(1, 12, 1, 1)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


def test_channel_shuffle_channels_last_and_module():
    x = torch.randn(2, 24, 7, 7).to(memory_format=torch.channels_last)
    y = ChannelShuffle(3)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, paper_shuffle_reference(x.contiguous(), 3))


def test_channel_shuffle_is_differentiable():
    x = torch.randn(1, 12, 2, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: channel_shuffle(t, 3), (x,))
    # The gradient of a permutation is the inverse permutation of the upstream gradient.
    upstream = torch.randn(1, 12, 2, 2, dtype=torch.double)
    (grad,) = torch.autograd.grad(channel_shuffle(x, 3), x, upstream)
    assert torch.equal(paper_shuffle_reference(grad, 3), upstream)


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="10 channels cannot be split into 3 groups"):
        channel_shuffle(torch.randn(1, 10, 2, 2), 3)


def test_conv_bn_act_rejects_widths_that_groups_do_not_divide():
    with pytest.raises(ValueError, match="divisible by 3"):
        ConvBNAct(10, 12, groups=3)


@pytest.mark.parametrize(
    "value,divisor,expected",
    [(32 * 0.35, 8, 16), (24 * 0.35, 8, 8), (96 * 0.35, 8, 32), (160 * 1.4, 8, 224), (136, 16, 144), (12, 8, 16)],
)
def test_make_divisible(value, divisor, expected):
    # MobileNet V2 0.35: stem 16 and widths 8/8/16/24/32/56/112 (TF-slim / torchvision rounding).
    assert make_divisible(value, divisor) == expected


def test_one_shuffle_module_with_an_export_mode():
    from torch import nn

    from shufflenet.models.layers import set_shuffle_mode

    x = torch.randn(2, 24, 5, 3)
    native, reshape = ChannelShuffle(3), ChannelShuffle(3, mode="reshape")
    assert torch.equal(native(x), reshape(x)) and torch.equal(native(x), paper_shuffle_reference(x, 3))
    model = set_shuffle_mode(nn.Sequential(ChannelShuffle(3), nn.Sequential(ChannelShuffle(4))), "reshape")
    assert [m.mode for m in model.modules() if isinstance(m, ChannelShuffle)] == ["reshape", "reshape"]
    with pytest.raises(ValueError, match="mode must be one of"):
        set_shuffle_mode(model, "gather")
    with pytest.raises(ValueError, match="groups >= 1"):
        ChannelShuffle(0)
