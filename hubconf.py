"""torch.hub entry points, one per registered model:

    model = torch.hub.load("path/to/this/repo", "shufflenet_v1_x1_0_g3", source="local", weights="w.safetensors")
    model = torch.hub.load("OWNER/shufflenet", "mobilenet_v2_x1_0", num_classes=10)   # from GitHub

Keyword arguments go to ``shufflenet.create_model`` (``weights``, ``num_classes``, ``small_input``, ...).
"""
import os as _os
import sys as _sys

_sys.path.insert(0, _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src"))

from shufflenet import create_model as _create_model  # noqa: E402
from shufflenet import list_models as _list_models  # noqa: E402

dependencies = ["torch", "torchvision", "safetensors"]


def _entry_point(name):
    def build(weights=None, **kwargs):
        return _create_model(name, weights=weights, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{name}, built by shufflenet.create_model({name!r}, weights=None, **kwargs)."
    return build


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
