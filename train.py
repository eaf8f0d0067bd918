"""Train a class-conditional GAN: `python train.py --help`. The work lives in cgan/ (see cgan/training_cli.py)."""
import sys

from cgan.training_cli import main

if __name__ == "__main__":
    sys.exit(main())
