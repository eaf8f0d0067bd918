"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentation applied to every image D
sees, real and fake, so D cannot memorise a small training set and G is not taught the augmentation.

Only translation and cutout: flips would turn digits and letters into other symbols. Black (-1) fills
the uncovered border and the cut-out square, which is what the background of these datasets is.
All randomness comes from the caller's generator, so a resumed run draws the same augmentations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from: {', '.join(POLICIES)}")
    return names


def _grid(x: torch.Tensor):
    n, _, h, w = x.shape
    gy = torch.arange(h, device=x.device).view(1, h, 1).expand(n, h, w)
    gx = torch.arange(w, device=x.device).view(1, 1, w).expand(n, h, w)
    return gy, gx


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device, generator=gen)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device, generator=gen)
    gy, gx = _grid(x)
    gy = (gy + ty + sh).clamp(0, h + 2 * sh - 1)
    gx = (gx + tx + sw).clamp(0, w + 2 * sw - 1)
    padded = F.pad(x, (sw, sw, sh, sh), value=-1.0)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device, generator=gen)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device, generator=gen)
    gy, gx = _grid(x)
    y0, x0 = oy - ch // 2, ox - cw // 2
    inside = (gy >= y0) & (gy < y0 + ch) & (gx >= x0) & (gx < x0 + cw)
    return torch.where(inside[:, None], torch.full_like(x, -1.0), x)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    for name in policy:
        x = translation(x, gen) if name == "translation" else cutout(x, gen)
    return x
