"""A simulated clinician marking landmarks on simulated X-rays. **Evaluation code only.**

The 3D landmarks come from the shape model fitted to the ground-truth vertebra surface (so
they are the model's own anatomical points on this patient); they are projected with each
view's geometry and jittered with Gaussian noise of ``sigma_mm`` at the vertebra, converted to
pixels by each view's magnification. The fitter only ever sees the resulting 2D clicks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.evaluation.truth_fit import cached_surface_fit
from twinsim.imaging.landmarks_file import CLICKABLE, Clicks
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.shape.model import ShapeModel

DEFAULT_CLICK_SIGMA_MM = 1.0


def true_landmarks_mm(model: ShapeModel, truth: SurfaceMesh, iterations: int = 300) -> dict[str, np.ndarray]:
    """The model's landmarks on the ground-truth vertebra (model fitted to its surface, once: see truth_fit)."""
    fit = cached_surface_fit(model, truth, iterations=iterations)
    return model.annotation_points(fit.vertices_mm)


def simulate_clicks(geoms: Sequence[ProjectionGeometry], landmarks_mm: dict[str, np.ndarray], sigma_mm: float = DEFAULT_CLICK_SIGMA_MM,
                    seed: int = 0, names: Sequence[str] = CLICKABLE) -> Clicks:
    rng = np.random.default_rng(seed)
    centre = np.mean([landmarks_mm[n] for n in names], axis=0)
    views = []
    for g in geoms:
        depth = (g.T_source_frame_mm @ np.append(centre, 1.0))[2]
        px_per_mm = g.sdd_mm / depth / np.asarray(g.pixel_spacing_mm)
        views.append({n: g.project(landmarks_mm[n][None])[0] + rng.normal(0.0, sigma_mm, 2) * px_per_mm for n in names})
    return Clicks(views)
