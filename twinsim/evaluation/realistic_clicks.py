"""A realistic simulated clinician: clicks what the image shows, and now and then a gross mistake. **Evaluation code.**

A person does not click the projection of a model's 3D landmark. They click a feature of the
shadow: the middle of the pedicle's oval, the tip of the spinous process's outline, the
middle of the body. :func:`image_point` derives that point from the true bone as it projects
in the view (the shadow of the bone around the landmark, rasterised at the detector's pixels),
so its offset from the 3D landmark's projection, the definitional bias, changes with the view
the way a person's does. Click noise comes on top of it, as for the ideal clinician.

Gross mistakes come at a set rate, one per case at most, each kind equally often:

- ``left_right_swap``: left and right exchanged in one view;
- ``neighbouring_vertebra``: one landmark, in one view, put on the vertebra above or below;
- ``missing_landmark``: one landmark left out of one view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.errors import UsageError
from twinsim.evaluation.simulated_clicks import simulate_clicks
from twinsim.imaging.landmarks_file import Clicks
from twinsim.imaging.projection import ProjectionGeometry

CLINICIANS = ("ideal", "realistic")
MISTAKES = ("left_right_swap", "neighbouring_vertebra", "missing_landmark")
DEFAULT_MISTAKE_RATE = 0.1
# How much bone around a landmark a person reads as its feature (mm): the pedicle's wall, the body's outline...
FEATURE_RADIUS_MM = {"body_centroid": 40.0, "superior_endplate_centre": 10.0, "inferior_endplate_centre": 10.0,
                     "canal_centre": 10.0, "left_pedicle_centre": 6.0, "right_pedicle_centre": 6.0,
                     "spinous_process_tip": 6.0, "left_transverse_process_tip": 6.0, "right_transverse_process_tip": 6.0}
TIPS = ("spinous_process_tip", "left_transverse_process_tip", "right_transverse_process_tip")
SWAPS = (("left_pedicle_centre", "right_pedicle_centre"), ("left_transverse_process_tip", "right_transverse_process_tip"))


def image_point(g: ProjectionGeometry, bone: SurfaceMesh, landmarks_mm: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Where a person marks ``name`` in view ``g``: the middle of its feature's shadow, or a tip's outermost point."""
    p = landmarks_mm[name]
    near = np.linalg.norm(bone.vertices_mm - p, axis=1) <= FEATURE_RADIUS_MM.get(name, 8.0)
    if name == "body_centroid" and "canal_centre" in landmarks_mm:
        # The body's outline, not the pedicles' roots behind it: bone in front of the canal's front half.
        u = p - landmarks_mm["canal_centre"]
        near &= (bone.vertices_mm - landmarks_mm["canal_centre"]) @ u > 0.5 * (u @ u)
    faces = bone.faces[near[bone.faces].all(axis=1)]
    if len(faces) < 4:
        return g.project(p[None])[0]
    uv = np.zeros((len(bone.vertices_mm), 2))
    uv[near] = g.project(bone.vertices_mm[near])  # only the feature's vertices are looked at
    idx = np.unique(faces)
    if name in TIPS:
        centre = g.project(np.mean(list(landmarks_mm.values()), axis=0)[None])[0]
        d = g.project(p[None])[0] - centre
        d /= max(np.linalg.norm(d), 1e-9)
        return uv[idx[np.argmax((uv[idx] - centre) @ d)]]
    # The shadow's centroid: the union of the feature's projected triangles, at 4 samples per pixel.
    scale = 2.0
    lo = np.floor(uv[idx].min(0)) - 1
    hi = np.ceil(uv[idx].max(0)) + 1
    size = np.maximum(((hi - lo) * scale).astype(int), 1)
    canvas = Image.new("1", (int(size[0]), int(size[1])), 0)
    draw = ImageDraw.Draw(canvas)
    for f in faces:
        draw.polygon([tuple(((uv[i] - lo) * scale).tolist()) for i in f], fill=1)
    mask = np.asarray(canvas, dtype=bool)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return g.project(p[None])[0]
    return lo + (np.array([cols.mean(), rows.mean()]) + 0.5) / scale


@dataclass(frozen=True)
class Clinician:
    """``ideal``: the 3D landmarks' projections plus noise. ``realistic``: the image's features plus noise, and mistakes."""

    kind: str = "ideal"
    mistake_rate: float = DEFAULT_MISTAKE_RATE

    def __post_init__(self) -> None:
        if self.kind not in CLINICIANS:
            raise UsageError(f"unknown clinician {self.kind!r}: use {' or '.join(CLINICIANS)}")
        if not 0.0 <= self.mistake_rate <= 1.0:
            raise UsageError(f"the clinician's mistake rate must be within 0-1, got {self.mistake_rate!r}")

    def mark(self, geoms: Sequence[ProjectionGeometry], landmarks_mm: dict[str, np.ndarray], sigma_mm: float, seed: int,
             names: Sequence[str], bone: SurfaceMesh | None = None,
             neighbour_offset_mm: np.ndarray | None = None) -> tuple[Clicks, dict[str, Any] | None]:
        """The clicks for two views, and the mistake made in them (None when none)."""
        ideal = simulate_clicks(geoms, landmarks_mm, sigma_mm, seed=seed, names=names)
        if self.kind == "ideal":
            return ideal, None
        if bone is None:
            raise ValueError("the realistic clinician needs the true bone to see what the image shows")
        views = []
        for g, clicked in zip(geoms, ideal.views, strict=True):
            noise = {n: clicked[n] - g.project(landmarks_mm[n][None])[0] for n in names}  # the ideal clinician's noise
            views.append({n: image_point(g, bone, landmarks_mm, n) + noise[n] for n in names})
        rng = np.random.default_rng([seed, 7])
        if rng.uniform() >= self.mistake_rate:
            return Clicks(views), None
        kind = MISTAKES[int(rng.integers(len(MISTAKES)))]
        k = int(rng.integers(len(views)))
        if kind == "left_right_swap":
            for a, b in SWAPS:
                if a in views[k] and b in views[k]:
                    views[k][a], views[k][b] = views[k][b], views[k][a]
            return Clicks(views), {"kind": kind, "view": k}
        name = str(names[int(rng.integers(len(names)))])
        if kind == "missing_landmark":
            del views[k][name]
            return Clicks(views), {"kind": kind, "view": k, "landmark": name}
        offset = neighbour_offset_mm if neighbour_offset_mm is not None else _pitch(landmarks_mm)
        offset = offset * (1.0 if rng.uniform() < 0.5 else -1.0)
        views[k][name] = views[k][name] + geoms[k].project((landmarks_mm[name] + offset)[None])[0] - \
            geoms[k].project(landmarks_mm[name][None])[0]
        return Clicks(views), {"kind": kind, "view": k, "landmark": name, "offset_mm": np.round(offset, 1).tolist()}


def _pitch(landmarks_mm: dict[str, np.ndarray]) -> np.ndarray:
    """One vertebra up the spine: endplate to endplate plus the disc."""
    return 1.3 * (landmarks_mm["superior_endplate_centre"] - landmarks_mm["inferior_endplate_centre"])


def neighbour_offset_mm(levels: dict[str, SurfaceMesh], level: str) -> np.ndarray | None:
    """From the target's centroid to its nearest complete neighbour's (sign chosen by the mistake), or None."""
    from twinsim.anatomy.labels import VERTEBRA_LEVELS

    i = VERTEBRA_LEVELS.index(level)
    for j in (i + 1, i - 1):
        if 0 <= j < len(VERTEBRA_LEVELS) and VERTEBRA_LEVELS[j] in levels:
            return levels[VERTEBRA_LEVELS[j]].centroid_mm - levels[level].centroid_mm
    return None
