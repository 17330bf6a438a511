"""A contact sheet of X-rays with outlines drawn on, as a person would check a set of views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import measure

from twinsim.report import atomic_output

DISPLAY_PX = 512


def mask_outlines_px(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2D mask as (N, 2) arrays of pixel coordinates (u, v)."""
    padded = np.pad(mask.astype(np.float32), 1)
    return [c[:, ::-1] - 1 + 0.5 for c in measure.find_contours(padded, 0.5)]


def write_contact_sheet(path: str | Path, panels: list[dict], title: str = "") -> Path:
    """``panels``: dicts with ``image`` (H, W in [0, 1]), ``label`` and optional ``outlines``
    (list of (N, 2) u, v arrays) and ``points`` ((N, 2) u, v), drawn in red and yellow."""
    cols = min(len(panels), 4)
    rows = (len(panels) + cols - 1) // cols
    header = 24 if title else 0
    sheet = Image.new("RGB", (cols * DISPLAY_PX, rows * (DISPLAY_PX + 20) + header), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill="black")
    for i, p in enumerate(panels):
        img = np.asarray(p["image"], dtype=np.float32)
        h, w = img.shape
        s = DISPLAY_PX / max(h, w)
        tile = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((round(w * s), round(h * s)), Image.BILINEAR).convert("RGB")
        x0, y0 = (i % cols) * DISPLAY_PX, header + (i // cols) * (DISPLAY_PX + 20)
        sheet.paste(tile, (x0, y0 + 20))
        d = ImageDraw.Draw(sheet)
        for outline in p.get("outlines", []):
            pts = [(x0 + u * s, y0 + 20 + v * s) for u, v in outline]
            d.line(pts + pts[:1], fill=(230, 30, 30), width=2)
        for u, v in np.asarray(p.get("points", np.empty((0, 2)))):
            cx, cy = x0 + u * s, y0 + 20 + v * s
            d.line([(cx - 6, cy), (cx + 6, cy)], fill=(250, 220, 0), width=2)
            d.line([(cx, cy - 6), (cx, cy + 6)], fill=(250, 220, 0), width=2)
        draw.text((x0 + 6, y0 + 4), p["label"], fill="black")
    with atomic_output(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)
