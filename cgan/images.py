"""Image helpers: tensors in [-1, 1] <-> uint8 arrays, grids, PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (B, H, W) for grayscale or (B, H, W, 3) for RGB; 0 is black."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return x[:, 0].numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]: the normalisation every model in this project uses."""
    return images.float() / 127.5 - 1.0


def make_grid(images: np.ndarray, rows: int, cols: int, pad: int = 2, pad_value: int = 40) -> np.ndarray:
    """Tile ``rows * cols`` images (row-major; missing cells stay padding colour) into one array."""
    images = np.asarray(images)
    h, w = images.shape[1:3]
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + images.shape[3:]
    grid = np.full(shape, pad_value, dtype=np.uint8)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = img
    return grid


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so 28x28 images are seen as pixels, not thumbnails."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
