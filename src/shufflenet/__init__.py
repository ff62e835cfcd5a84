"""ShuffleNet V1 and its MobileNet baselines, with paper-exact complexity accounting."""
from __future__ import annotations

from . import models
from .factory import LoadedModel, create_model, load, load_weights
from .io.weight_file import save_weights
from .models.complexity import Profile, profile
from .models.layers import ChannelShuffle, channel_shuffle
from .models.registry import list_models

__version__ = "0.2.0"
__all__ = [
    "ChannelShuffle", "LoadedModel", "Profile", "channel_shuffle", "create_model", "list_models", "load",
    "load_weights", "models", "profile", "save_weights",
]
