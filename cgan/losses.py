"""GAN losses on discriminator logits.

bce:   the original non-saturating GAN loss (Goodfellow et al. 2014) as binary cross-entropy on logits.
hinge: the hinge loss of SNGAN / BigGAN (Lim & Ye 2017; Miyato et al. 2018).

``wrong`` holds the logits of real images paired with a wrong label: the "matching-aware" third term of
the conditional GAN objective (Reed et al. 2016) that teaches D to reject a right image with a wrong
label, weighted by ``mismatch_weight``. ``smoothing`` is one-sided label smoothing (Salimans et al. 2016):
the target for real images becomes 1 - smoothing; fakes keep target 0.

mode_seeking_loss is the generator's diversity term of MSGAN (Mao et al. 2019): for pairs of latents with
the same label, the inverse of how far apart their images are per unit of latent distance, so a generator
that maps a whole class to a few images (Fashion-MNIST's bags without handles) pays for it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge")


def discriminator_loss(loss: str, real: torch.Tensor, fake: torch.Tensor, wrong: torch.Tensor | None = None,
                       mismatch_weight: float = 0.0, smoothing: float = 0.0) -> torch.Tensor:
    if loss == "bce":
        # BCE-with-logits against target t is t*softplus(-l) + (1-t)*softplus(l).
        real_term = (1 - smoothing) * F.softplus(-real) + smoothing * F.softplus(real)
        fake_term, wrong_fn = F.softplus(fake), F.softplus
    elif loss == "hinge":
        real_term, fake_term = F.relu(1 - real), F.relu(1 + fake)
        wrong_fn = lambda l: F.relu(1 + l)  # noqa: E731
    else:
        raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    total = real_term.mean() + fake_term.mean()
    if wrong is not None and mismatch_weight > 0:
        total = total + mismatch_weight * wrong_fn(wrong).mean()
    return total


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    if loss == "bce":
        return F.softplus(-fake).mean()  # non-saturating: maximise log D(G(z))
    if loss == "hinge":
        return -fake.mean()
    raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")


def mode_seeking_loss(images: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's term on a batch whose first and second halves pair up (same labels, different latents):
    1 / (mean |image_a - image_b| / mean |z_a - z_b| + eps), to be minimised by G."""
    half = len(images) // 2
    a, b = images[:half].float(), images[half:2 * half].float()
    ratio = (a - b).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
    return 1.0 / (ratio + eps)
