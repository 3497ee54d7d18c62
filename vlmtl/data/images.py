"""Image loading with one error type, and a picklable CLIP-style transform.

Real image folders contain missing and corrupt files; every failure becomes an
``ImageLoadError`` naming the file, so the dataset can either stop or skip-and-count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .hf_datasets import IMAGE_REFERENCE, load_dataset_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageLoadError(ValueError):
    """An image file is missing, unreadable or corrupt."""


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (truncated files fail here, not later) and return RGB. A path
    starting ``hf-dataset://`` names a row of a saved Hugging Face dataset (``hf_datasets``)."""
    if str(path).startswith(IMAGE_REFERENCE):
        return load_dataset_image(str(path))
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageLoadError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


class ImageTransform:
    """Resize the shorter side (bicubic), centre-crop to ``size``, scale to [0, 1] and
    normalise; a plain class (not a lambda) so DataLoader workers can pickle it."""

    def __init__(self, size: int = 224, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD):
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        w, h = image.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1).div_(255.0)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, mean={self.mean}, std={self.std})"
