"""Decode speed of your own images (cgan/image_folder.py): a folder of photo-sized JPEGs and PNGs decoded
into 64x64 RGB (and 32x32 grey) training arrays, with 1 thread and with every core, then read back from
the decode cache.

    python bench/bench_decode.py [--images 2000] [--side 256] [--json bench/results/decode-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cgan.distributed import real_core_count  # noqa: E402
from cgan.image_folder import FolderSource, decode_all, read_folder, scan_folder  # noqa: E402


def write_folder(root: Path, n: int, side: int, classes: int = 10) -> None:
    """Smooth random colour fields (JPEG-friendly like photos), 3 of 4 as JPEG, 1 of 4 as PNG."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class-{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
        img.save(folder / (f"{i}.png" if i % 4 == 3 else f"{i}.jpg"), quality=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--side", type=int, default=256, help="width of the source images (height 3/4 of it)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_folder(root, args.images, args.side)
        os.environ["CGAN_DATA_CACHE"] = str(Path(tmp) / "cache")
        t = time.perf_counter()
        fl = scan_folder(root)
        scan_s = time.perf_counter() - t
        for size, channels in ((64, 3), (32, 1)):
            for threads in sorted({1, real_core_count()}):
                _, index, timing = decode_all(fl, size, channels, progress=False, threads=threads)
                assert len(index) == args.images
                rows.append({"size": size, "channels": channels, "threads": threads,
                             "seconds": timing["seconds"], "images_per_s": timing["images_per_second"]})
                print(f"decode {args.images} images {args.side}x{args.side * 3 // 4} -> {channels}x{size}x{size}, "
                      f"{threads} thread(s): {timing['seconds']:.2f} s, {timing['images_per_second']:,.0f} images/s")
        src = FolderSource(str(root), None, 64, 3)
        read_folder(src, progress=False)                     # first run: decode + write the cache
        t = time.perf_counter()
        data, _, _ = read_folder(src, progress=False)        # later runs: scan + read the cache
        cached_s = time.perf_counter() - t
        assert data.report["decode"]["from_cache"]
        print(f"scan (stat only): {scan_s:.2f} s; a later run from the cache (scan + read): {cached_s:.2f} s")
    result = {"benchmark": "decode your own images", "images": args.images, "source_side": args.side,
              "rows": rows, "scan_seconds": round(scan_s, 3), "from_cache_seconds": round(cached_s, 3),
              "cpu": platform.processor() or platform.machine(), "cores": real_core_count(),
              "pillow": Image.__version__, "date": time.strftime("%Y-%m-%d")}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
