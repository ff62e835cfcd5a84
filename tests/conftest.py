import pytest
import torch

from shufflenet import create_model, profile


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def count(name: str, resolution: int = 224, **kwargs):
    """Profile a registered model built on the meta device (no computation)."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return profile(model, resolution)
