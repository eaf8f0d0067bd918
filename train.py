"""Train a class-conditional GAN: `python train.py --help`. The work lives in cgan/ (see cgan/cli.py)."""
import sys

from cgan.cli import main

if __name__ == "__main__":
    sys.exit(main())
