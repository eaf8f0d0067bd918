"""Image helpers: tensors in [-1, 1] <-> uint8 arrays, grids, PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write


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
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def _label_font(scale: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(10, min(20, 4 * scale + 4)))


def _shorten(text: str, max_chars: int = 14) -> str:
    return text if len(text) <= max_chars else text[:max_chars - 1] + "\u2026"


def label_width(labels: list[str], scale: int) -> int:
    """Width in pixels of the column label_rows adds."""
    from PIL import ImageDraw

    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    font = _label_font(scale)
    return int(max(probe.textlength(_shorten(t), font=font) for t in labels)) + 8


def label_rows(image: np.ndarray, labels: list[str], cell: int, pad: int, scale: int) -> np.ndarray:
    """Prefix an (already upscaled) grid with a column naming each row, so an overview of many classes
    can be read without counting rows (in the page and in the downloaded PNG alike). Row r is the r-th
    row of make_grid(..., pad=pad) of cell x cell images, enlarged ``scale`` times."""
    from PIL import ImageDraw

    width, font = label_width(labels, scale), _label_font(scale)
    mode = "L" if image.ndim == 2 else "RGB"
    panel = Image.new(mode, (width, image.shape[0]), 255 if mode == "L" else (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for r, text in enumerate(labels):
        y = (pad + r * (cell + pad) + cell / 2) * scale
        draw.text((width - 4, y), _shorten(text), fill=0 if mode == "L" else (0, 0, 0), font=font, anchor="rm")
    return np.concatenate([np.asarray(panel, dtype=np.uint8), image], axis=1)
