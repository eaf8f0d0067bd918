"""cgan-studio: train class-conditional GANs on small image datasets and explore them.

Python API::

    import cgan
    sampler = cgan.load("checkpoints/mnist")           # exported folder, checkpoint folder or run folder
    images, labels = sampler.sample(["3", "7"], per_class=8, seed=42)   # uint8, class-major
"""
__version__ = "0.1.0"

from .sampler import Sampler, latents, load  # noqa: E402

__all__ = ["Sampler", "latents", "load", "__version__"]
