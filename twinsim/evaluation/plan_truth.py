"""A planned path in the true bone. **Evaluation code only.**

The true vertebra is the CT label's surface; its anatomical landmarks (axes, canal, body, the
model's path annotations) come from the shape model fitted to that surface. Each path is put
through the planner's own safety check on that surface, so "safe in truth" means exactly what
the planner promised on its fitted surface: the cannula's clearance to the true cortex is at
least its radius from ``dock_mm`` below the entry to the tip (no breach), and the tip is inside
the true vertebral body.

The *ceiling* is the planner run on the true surface: what it can do with perfect anatomy.
Entry and target errors are measured against it. The *model floor* is the planner on the shape
model fitted to the true surface: what a perfect reconstruction with this model would give.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.evaluation.truth_fit import cached_surface_fit
from twinsim.planning.planner import VertebraPlan, assess_pair, plan_vertebra
from twinsim.planning.settings import PlanSettings
from twinsim.shape.model import ShapeModel


class TrueVertebra:
    """The true surface with the model's landmarks on it, and the planner's ceiling plan there."""

    def __init__(self, truth: SurfaceMesh, model: ShapeModel, settings: PlanSettings,
                 landmarks: dict[str, np.ndarray] | None = None) -> None:
        """``landmarks``: the model's points on this surface when already known (no model floor is then computed)."""
        self.mesh = truth
        self.settings = settings
        self.model_fit = None if landmarks is not None else cached_surface_fit(model, truth)
        self.landmarks = landmarks if landmarks is not None else model.annotation_points(self.model_fit.vertices_mm)
        self.ceiling = plan_vertebra(truth.vertices_mm, truth.faces, self.landmarks, settings, frame=truth.frame)
        # The planner on the model fitted to the true surface: what a perfect reconstruction with this model gives.
        self.model_floor = None if self.model_fit is None else plan_vertebra(self.model_fit.vertices_mm, model.faces, self.landmarks,
                                                                             settings, frame=truth.frame)

    def score(self, paths: dict[str, tuple[np.ndarray, np.ndarray]], accepted: dict[str, bool] | None = None) -> dict[str, Any]:
        """Each path in the true bone. ``accepted``: the producing method's own verdict per side (None: it has none)."""
        # Only the cannula and tip rules decide safety in the bone; angle and convergence limits are planning choices.
        s = replace(self.settings, medial_angle_deg=(-180.0, 180.0), max_tilt_deg=180.0, convergence_deg=(-1.0, 361.0),
                    anterior_fraction=0.0, min_tip_to_cortex_mm=0.0)
        checked = assess_pair(self.mesh.vertices_mm, self.mesh.faces, self.landmarks, paths, s, method="scored")
        radius = 0.5 * s.cannula_diameter_mm
        out: dict[str, Any] = {}
        for side, p in checked.paths.items():
            ref = self.ceiling.paths[side]
            breach = p.min_clearance_mm < radius
            tip_in_body = p.tip_in_body
            out[side] = {
                "clearance_mm": p.min_clearance_mm, "clearance_region": p.clearance_region, "nearest_wall": p.nearest_wall,
                "breach": bool(breach), "breach_depth_mm": float(max(0.0, radius - p.min_clearance_mm)),
                "medial_breach": bool(breach and p.nearest_wall == "medial" and p.clearance_region == "pedicle"),
                "tip_in_body": bool(tip_in_body), "safe_in_truth": bool(not breach and tip_in_body),
                "accepted": None if accepted is None else bool(accepted[side]),
                "entry_error_mm": float(np.linalg.norm(p.entry_mm - ref.entry_mm)),
                "target_error_mm": float(np.linalg.norm(p.target_mm - ref.target_mm)),
                "angle_error_deg": float(np.degrees(np.arccos(np.clip(p.axis @ ref.axis, -1.0, 1.0)))),
            }
        return out


def plan_paths(plan: VertebraPlan) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, bool]]:
    return {s: (p.entry_mm, p.target_mm) for s, p in plan.paths.items()}, {s: p.safe for s, p in plan.paths.items()}
