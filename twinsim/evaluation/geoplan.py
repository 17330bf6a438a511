"""2D-GeoPlan: the seed 000 baseline that plans in 2D and triangulates. **Evaluation code only.**

In each X-ray the simulated clinician marks the entry and the target of each path (the path
the planner makes on the true surface, i.e. the one an expert would aim for), with the same
Gaussian click error as the landmarks; the 3D entry and target are triangulated (DLT). What
the seed's baseline faced, modelled explicitly:

- a path seen nearly end-on is a blob, not a line: when its projection is shorter than
  ``end_on_min_mm`` (at the vertebra; default two cannula diameters) it cannot be drawn in
  that view, and that path fails;
- where the two paths' projections overlap (closer than a cannula diameter, as in a lateral
  view), left cannot be told from right: the clinician labels them by a coin flip.

A path that cannot be drawn counts as a failure, as in the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twinsim.imaging.projection import ProjectionGeometry
from twinsim.recon.initialization import triangulate_dlt


@dataclass(frozen=True)
class GeoPlanSettings:
    click_sigma_mm: float = 1.0
    cannula_diameter_mm: float = 5.0
    end_on_factor: float = 2.0  # a projection shorter than this many cannula diameters cannot be drawn

    @property
    def end_on_min_mm(self) -> float:
        return self.end_on_factor * self.cannula_diameter_mm


def _segment_distance(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray, n: int = 41) -> float:
    """Smallest distance between 2D segments pq and rs (sampled: enough at the pixel scale)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b = p + t * (q - p), r + t * (s - r)
    return float(np.min(np.linalg.norm(a[:, None] - b[None], axis=2)))


def geoplan(geoms: Sequence[ProjectionGeometry], ideal: dict[str, tuple[np.ndarray, np.ndarray]], settings: GeoPlanSettings,
            seed: int = 0, triangulate_with: Sequence[ProjectionGeometry] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray] | str]:
    """Per side: the triangulated (entry, target), or the reason no path could be given.

    The clinician draws on images made with ``geoms`` (the truth, where ``ideal`` is); the system
    triangulates with ``triangulate_with`` (what it knows of the same images, e.g. tracked) when given.
    """
    rng = np.random.default_rng(seed)
    sides = list(ideal)
    failed: dict[str, str] = {}
    clicks: list[dict[str, np.ndarray]] = []
    centre = np.mean([pt for pair in ideal.values() for pt in pair], axis=0)
    for i, g in enumerate(geoms):
        depth = (g.T_source_frame_mm @ np.append(centre, 1.0))[2]
        px_per_mm = g.sdd_mm / depth / np.asarray(g.pixel_spacing_mm)
        uv = {s: g.project(np.vstack(ideal[s])) for s in sides}  # (2, 2): entry, target
        for s in sides:
            length_mm = float(np.linalg.norm((uv[s][1] - uv[s][0]) / px_per_mm))
            if length_mm < settings.end_on_min_mm and s not in failed:
                failed[s] = f"seen end-on in view {i + 1}: projected {length_mm:.1f} mm (< {settings.end_on_min_mm:g} mm), cannot be drawn"
        view = {s: uv[s] + rng.normal(0.0, settings.click_sigma_mm, (2, 2)) * px_per_mm for s in sides}
        if len(sides) == 2:
            a, b = (uv[s] / px_per_mm for s in sides)
            if _segment_distance(a[0], a[1], b[0], b[1]) < settings.cannula_diameter_mm and rng.random() < 0.5:
                view = {sides[0]: view[sides[1]], sides[1]: view[sides[0]]}  # left and right overlap: labelled the wrong way round
        clicks.append(view)
    out: dict[str, tuple[np.ndarray, np.ndarray] | str] = {}
    for s in sides:
        if s in failed:
            out[s] = failed[s]
            continue
        pts = triangulate_dlt([g.P for g in (triangulate_with or geoms)], [v[s] for v in clicks])
        out[s] = (pts[0], pts[1])
    return out
