"""Image files: listing them, and reading one safely as 8-bit RGB whatever its mode.

Reading refuses decompression bombs (more pixels than :data:`MAX_PIXELS`) instead of allocating them, and
converts every PIL mode correctly: 16-bit and 32-bit grayscale are scaled down to 8 bits (PIL's own
``convert("RGB")`` clips them, turning a 16-bit photograph white), palette images go through RGBA, CMYK
through PIL's conversion, and an alpha channel is composited on white.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
MAX_PIXELS = 8192 * 8192  # 64 megapixels: any photograph, not a decompression bomb


def list_images(directory: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``directory`` (recursively by default), sorted; none is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image directory {directory} does not exist")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in directory.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return files


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``, correct for high-bit-depth grayscale, palette, CMYK and alpha modes."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "I":  # how PIL opens most 16-bit PNGs: 16-bit data unless it fits in 8 bits
            top = 65535.0 if values.max() > 255 else 255.0
        else:  # "F": floating point of no fixed range
            top = max(float(values.max()), 1.0)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB; a missing, unreadable or oversized file raises a ``ValueError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ValueError(f"{image.width}x{image.height} pixels is more than the {MAX_PIXELS:,} allowed "
                                     f"(a decompression bomb?)")
                image.load()
                return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
