"""The landmarks file (``twinsim-landmarks/1``): 2D landmarks a person marked on each X-ray.

One entry per view, in the order of the images::

    {"format": "twinsim-landmarks/1", "level": "L1",
     "views": [{"image": "AP.png", "landmarks_px": {"spinous_process_tip": [u, v], ...}}, ...]}

Pixel coordinates follow the acquisition's convention (pixel (row i, col j) centre at
(j + 0.5, i + 0.5)). Names are the shape model's clickable landmarks or seed 000's backup names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.errors import TwinsimError
from twinsim.report import atomic_output, read_json

FORMAT = "twinsim-landmarks/1"
# What a clinician can point at on a radiograph of a vertebra (model annotation names).
CLICKABLE = ("body_centroid", "superior_endplate_centre", "inferior_endplate_centre", "canal_centre",
             "left_pedicle_centre", "right_pedicle_centre", "spinous_process_tip",
             "left_transverse_process_tip", "right_transverse_process_tip")
# Seed 000's backup landmarks, as model annotations.
BACKUP = {"centroid": "body_centroid", "superior": "superior_endplate_centre", "inferior": "inferior_endplate_centre",
          "left": "left_transverse_process_tip", "right": "right_transverse_process_tip"}


class LandmarksFileError(TwinsimError, ValueError):
    """A landmarks file is missing, malformed, or does not fit the images."""


@dataclass
class Clicks:
    """2D landmarks per view: ``views[i][name] = (u, v)`` pixels."""

    views: list[dict[str, np.ndarray]]
    level: str | None = None
    images: list[str | None] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        data = {"format": FORMAT, "level": self.level,
                "views": [{"image": (self.images[i] if i < len(self.images) else None),
                           "landmarks_px": {k: [float(x) for x in v] for k, v in view.items()}}
                          for i, view in enumerate(self.views)]}
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
        return Path(path)


def canonical_name(name: str) -> str:
    return BACKUP.get(name, name)


def load_clicks(path: str | Path, n_views: int | None = None) -> Clicks:
    """Read a clicks file; names may be model annotations or backup names (centroid, superior, ...)."""
    path = Path(path)
    d: Any = read_json(path, LandmarksFileError, "landmarks file")
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("views"), list):
        raise LandmarksFileError(f"landmarks file {path} must be a {FORMAT!r} object with a 'views' list")
    if n_views is not None and len(d["views"]) != n_views:
        raise LandmarksFileError(f"landmarks file {path} has {len(d['views'])} views but {n_views} images were given")
    views, images = [], []
    for i, v in enumerate(d["views"]):
        pts = v.get("landmarks_px") if isinstance(v, dict) else None
        if not isinstance(pts, dict):
            raise LandmarksFileError(f"landmarks file {path}: view {i} needs a 'landmarks_px' object")
        view = {}
        for name, uv in pts.items():
            try:
                a = np.asarray(uv, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise LandmarksFileError(f"landmarks file {path}: view {i} '{name}' is not a pair of numbers") from exc
            if a.shape != (2,) or not np.all(np.isfinite(a)):
                raise LandmarksFileError(f"landmarks file {path}: view {i} '{name}' must be [u, v] in pixels, got {uv!r}")
            view[canonical_name(str(name))] = a
        views.append(view)
        images.append(v.get("image"))
    return Clicks(views, d.get("level"), images)
