"""ShuffleNet V1 and its MobileNet baselines, with paper-exact complexity accounting."""
from __future__ import annotations

from . import models
from .complexity import Profile, profile
from .ops import ChannelShuffle, channel_shuffle
from .registry import create_model, list_models
from .weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = [
    "ChannelShuffle", "Profile", "channel_shuffle", "create_model", "list_models", "load_weights", "models", "profile",
    "save_weights",
]
