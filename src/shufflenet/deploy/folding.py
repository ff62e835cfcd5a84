"""Batch-norm folding: an inference copy of a model with every BN merged into the convolution before it.

In eval mode BN is the affine map ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel, so after a
convolution it folds into the convolution's weights and bias (Ioffe & Szegedy 2015, Sec. 3.1):
``W' = W * s`` per output channel and ``b' = beta + (b - mean) * s`` with ``s = gamma / sqrt(var + eps)``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution (with bias) computing ``bn(conv(x))`` of the eval-mode ``bn``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(shift + (bias - bn.running_mean) * scale)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` in which every ``Conv2d`` directly followed by a ``BatchNorm2d``
    inside an ``nn.Sequential`` (our ``ConvBNAct``, torchvision's ``Conv2dNormActivation`` and plain
    sequences) is replaced by the folded convolution, and the BN by ``nn.Identity``. ``model`` is unchanged."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[first] = fold_conv_bn(conv, bn)
                module._modules[second] = nn.Identity()
    return folded
