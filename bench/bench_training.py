"""Training speed (a script, not a test): the same benchmark as `python -m cgan.bench`, run from here
like every other benchmark, with its JSON beside theirs in bench/results/.

    python bench/bench_training.py --device cpu --precision-variants --json bench/results/cpu-2core-training.json
    python bench/bench_training.py --device cuda --json bench/results/h200-training.json

Times each architecture's real training iteration (dataset on the device, and through a DataLoader), the
naive baseline beside it (the tutorial loop: torchvision-style dataset with per-image transforms, a
DataLoader, eager fp32), and with --precision-variants fp32 / bf16 / channels_last / both, interleaved.
`--help` lists every option (time to quality included).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cgan.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
