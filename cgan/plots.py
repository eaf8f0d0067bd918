"""A loss-curve PNG drawn with Pillow (no plotting library needed for two lines)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from .files import atomic_write
from .runs import read_loss_rows

SERIES = (("d_loss", (214, 39, 40)), ("g_loss", (31, 119, 180)))


def plot_losses(csv_path: str | Path, png_path: str | Path, width: int = 800, height: int = 400) -> Path | None:
    """Plot d_loss and g_loss against step from the run's losses.csv (its readable rows: a log damaged by a
    crash is read as far as it goes). Returns None when there is no data."""
    rows = read_loss_rows(Path(csv_path))
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    values = {name: [r[name] for r in rows] for name, _ in SERIES}
    lo = min(min(v) for v in values.values())
    hi = max(max(v) for v in values.values())
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    x0, x1, y0, y1 = 60, width - 20, 20, height - 40
    s0, s1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1

    def to_px(step, value):
        return (x0 + (step - s0) / (s1 - s0) * (x1 - x0), y1 - (value - lo) / (hi - lo) * (y1 - y0))

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([x0, y0, x1, y1], outline=(120, 120, 120))
    for i in range(5):  # horizontal grid lines with value labels
        v = lo + (hi - lo) * i / 4
        y = to_px(s0, v)[1]
        draw.line([x0, y, x1, y], fill=(230, 230, 230))
        draw.text((5, y - 6), f"{v:.3g}", fill=(60, 60, 60))
    draw.text((x0, y1 + 8), f"step {int(s0)}", fill=(60, 60, 60))
    draw.text((x1 - 90, y1 + 8), f"step {int(s1)}", fill=(60, 60, 60))
    for k, (name, colour) in enumerate(SERIES):
        pts = [to_px(s, v) for s, v in zip(steps, values[name])]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        else:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
        draw.text((x0 + 10 + 90 * k, y0 + 5), name, fill=colour)
    return atomic_write(png_path, lambda f: img.save(f, format="PNG"))
