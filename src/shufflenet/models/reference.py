"""torchvision models registered beside ours, randomly initialised (nothing is downloaded): the speed and
accuracy references that ``models``, ``profile``, ``bench``, ``export`` and the training benchmarks take by name.

AlexNet is the papers' speed reference (720 MFLOPs in ShuffleNet Tables 6 and 8, MobileNets Table 9);
torchvision's ShuffleNet V2 1.0x and MobileNet V2 are there for context.
"""
from __future__ import annotations

from typing import Any, Callable

import torchvision
from torch import nn

from .record import ModelRecord
from .registry import register_model


def torchvision_factory(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``builder`` without weights, its record naming its first conv and its (last linear) classifier."""
    def build(num_classes: int = 1000, **kwargs: Any) -> nn.Module:
        model = builder(weights=None, num_classes=num_classes, **kwargs)
        names = {kind: [name for name, module in model.named_modules() if isinstance(module, kind)]
                 for kind in (nn.Conv2d, nn.Linear)}
        model.record = ModelRecord(None, num_classes, first_conv=names[nn.Conv2d][0], classifier=names[nn.Linear][-1])
        return model

    return build


for _name, _builder in (("tv_alexnet", torchvision.models.alexnet),
                        ("tv_shufflenet_v2_x1_0", torchvision.models.shufflenet_v2_x1_0),
                        ("tv_mobilenet_v2", torchvision.models.mobilenet_v2)):
    register_model(_name, torchvision_factory(_builder), reference=True)
