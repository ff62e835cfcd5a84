"""The built-in data set: scikit-learn's real handwritten digits, upscaled to 32x32 RGB (no download)."""
from __future__ import annotations

import numpy as np
import torch

DIGITS_MEAN, DIGITS_STD = (0.3053,) * 3, (0.3236,) * 3  # the 32x32 training images, all channels equal
DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.25, 0  # fixed train/test split of the 1,797 digits


def load_digits(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of scikit-learn's 1,797 real handwritten 8x8 digits (values 0-16), upscaled to 32x32 RGB uint8:
    images (N, 3, 32, 32) and labels; the split is 75/25, stratified, with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    index = train_idx if train else test_idx
    return images[index], labels[index]
