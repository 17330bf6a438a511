"""Both transpedicular paths on a vertebra surface: transfer from the model, refinement, safety check.

- **Transfer**: the shape model's annotated entry and target (``<side>_path_entry``,
  ``<side>_path_target``) evaluated on the fitted instance (seed 000, section 4.4).
- **Refinement**: per side, the axis is moved (2 offsets through the pedicle, 2 angles) and the
  tip pulled back along it, to make the smallest clearance between the cannula's axis and the
  bone surface as large as it can be (Nelder-Mead on that minimum, from the transferred path and
  from it shifted 1.5 mm and tilted 4 deg each way, the best polished once more);
  in the body the clearance counts ``body_extra_clearance_mm`` less, and so does the tip's
  distance to the surface in every direction, so the tip keeps off the body's cortex once the
  pedicle is centred. (On `bench plan`'s L1 cases most paths that breached the true bone did so
  at the body's anterolateral wall near the tip, where the reconstruction overestimates the body.)
  Kept as constraints: the target in the anterior third of the body and at least
  ``min_tip_to_cortex_mm`` short of the anterior cortex along the axis, each path's medial
  angle and cranio-caudal tilt within limits, and the target on its own side of the midline.
- **Safety check**, on the surface the plan was made on: the cannula's clearance must be at
  least its radius plus ``margin_mm`` from ``dock_mm`` below the entry to the tip; the tip
  inside the vertebral body and short of its anterior cortex; the pair's convergence within
  limits. A path that fails is returned with ``safe = False`` and its reason, never dropped.

Works on any closed surface with the model's landmarks on it: the fitted reconstruction (the
planner) or, in evaluation code only, the true vertebra (the ceiling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from twinsim.frames import perpendicular_basis
from twinsim.planning.cannula import BoneSurface, PathGeometryError, VertebraAxes
from twinsim.planning.settings import PlanSettings

SIDES = ("left", "right")


@dataclass
class PathPlan:
    side: str
    entry_mm: np.ndarray
    target_mm: np.ndarray
    method: str  # "transfer" or "refined"
    min_clearance_mm: float = float("nan")
    clearance_at_depth_mm: float = float("nan")
    clearance_region: str = ""  # "pedicle" or "body": where the minimum is
    nearest_wall: str = ""  # medial, lateral, superior, inferior, anterior, posterior
    tip_to_cortex_mm: float = float("nan")  # along the axis, beyond the target
    tip_depth_fraction: float = float("nan")  # of the body's depth, from its posterior wall
    medial_angle_deg: float = float("nan")
    tilt_deg: float = float("nan")
    tip_in_body: bool = False
    safe: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def axis(self) -> np.ndarray:
        d = self.target_mm - self.entry_mm
        return d / np.linalg.norm(d)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.target_mm - self.entry_mm))


@dataclass
class VertebraPlan:
    paths: dict[str, PathPlan]
    convergence_deg: float
    settings: PlanSettings
    frame: str = ""

    @property
    def safe(self) -> bool:
        return all(p.safe for p in self.paths.values())

    def settings_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.settings).items()}


class _Anatomy:
    """What the planner needs to know about one vertebra: its surface, axes and body extent."""

    def __init__(self, surface: BoneSurface, landmarks: dict[str, np.ndarray]) -> None:
        self.surface = surface
        self.axes = VertebraAxes.from_landmarks(landmarks)
        c, a = self.axes.body_centroid_mm, self.axes.anterior
        if not surface.inside(c[None])[0]:
            raise PathGeometryError("the body centroid landmark is not inside the surface: landmarks and surface disagree")
        t_post, t_ant = surface.ray_hit_mm(np.vstack([c, c]), np.vstack([-a, a]))
        if not (np.isfinite(t_post) and np.isfinite(t_ant)):
            raise PathGeometryError("the vertebral body is not closed along its antero-posterior axis")
        self.posterior_wall_mm = c - t_post * a
        self.body_depth_mm = float(t_post + t_ant)

    def medial(self, side: str) -> np.ndarray:
        return self.axes.right if side == "left" else -self.axes.right

    def angles_deg(self, side: str, u: np.ndarray) -> tuple[float, float]:
        """(medial angle in the axial plane, cranio-caudal tilt) of an axis pointing anteriorly."""
        ax = self.axes
        tilt = np.degrees(np.arcsin(np.clip(u @ ax.superior, -1, 1)))
        medial = np.degrees(np.arctan2(u @ self.medial(side), u @ ax.anterior))
        return float(medial), float(tilt)

    def depth_fraction(self, p: np.ndarray) -> float:
        return float((p - self.posterior_wall_mm) @ self.axes.anterior / self.body_depth_mm)

    def lateral_of_midline_mm(self, side: str, p: np.ndarray) -> float:
        return float((p - self.axes.canal_centre_mm) @ -self.medial(side))

    def wall_name(self, side: str, d: np.ndarray) -> str:
        ax = self.axes
        names = [("medial", self.medial(side)), ("superior", ax.superior), ("anterior", ax.anterior)]
        comps = [(d @ v, n) for n, v in names]
        val, name = max(comps, key=lambda c: abs(c[0]))
        opposite = {"medial": "lateral", "superior": "inferior", "anterior": "posterior"}
        return name if val > 0 else opposite[name]


def assess_path(anat: _Anatomy, plan: PathPlan, s: PlanSettings) -> PathPlan:
    """Fill in a path's clearance and geometry figures and decide whether it is safe."""
    surf = anat.surface
    prof = surf.clearance(plan.entry_mm, plan.target_mm, dock_mm=s.dock_mm)
    u = plan.axis
    k = int(np.argmin(prof.clearance_mm))
    plan.min_clearance_mm, plan.clearance_at_depth_mm = float(prof.clearance_mm[k]), float(prof.depth_mm[k])
    point = plan.entry_mm + prof.depth_mm[k] * u
    plan.clearance_region = "body" if anat.depth_fraction(point) > 0 else "pedicle"
    plan.nearest_wall = anat.wall_name(plan.side, prof.nearest_direction[k])
    plan.tip_to_cortex_mm = float(surf.ray_hit_mm(plan.target_mm[None], u[None])[0])
    plan.tip_depth_fraction = anat.depth_fraction(plan.target_mm)
    plan.medial_angle_deg, plan.tilt_deg = anat.angles_deg(plan.side, u)
    reasons = []
    need = s.required_clearance_mm
    if plan.min_clearance_mm < need:
        what = "breaches the cortex" if plan.min_clearance_mm < 0.5 * s.cannula_diameter_mm else "is too close to the cortex"
        if plan.nearest_wall == "medial" and plan.clearance_region == "pedicle":
            what += " towards the spinal canal (medial breach)" if plan.min_clearance_mm < 0.5 * s.cannula_diameter_mm else " on the canal side"
        reasons.append(f"the {s.cannula_diameter_mm:g} mm cannula {what}: clearance {plan.min_clearance_mm:.2f} mm "
                       f"< {need:.2f} mm at {plan.clearance_at_depth_mm:.1f} mm from the entry ({plan.clearance_region}, "
                       f"{plan.nearest_wall} wall)")
    inside = bool(surf.inside(plan.target_mm[None])[0])
    plan.tip_in_body = inside and plan.tip_depth_fraction > 0
    if not plan.tip_in_body:
        reasons.append("the tip is not inside the vertebral body" + ("" if inside else " (it lies outside the bone)"))
    elif plan.tip_depth_fraction < s.anterior_fraction:
        reasons.append(f"the tip is not in the anterior third of the body ({100 * plan.tip_depth_fraction:.0f} % of its depth, "
                       f"need >= {100 * s.anterior_fraction:.0f} %)")
    if not plan.tip_to_cortex_mm >= s.min_tip_to_cortex_mm - 1e-6:
        reasons.append(f"the tip is {plan.tip_to_cortex_mm:.1f} mm short of the anterior cortex along the axis "
                       f"(need >= {s.min_tip_to_cortex_mm:g} mm)")
    lo, hi = s.medial_angle_deg
    if not lo - 1e-6 <= plan.medial_angle_deg <= hi + 1e-6:
        reasons.append(f"medial angle {plan.medial_angle_deg:.1f} deg outside [{lo:g}, {hi:g}] deg")
    if abs(plan.tilt_deg) > s.max_tilt_deg + 1e-6:
        reasons.append(f"cranio-caudal tilt {plan.tilt_deg:+.1f} deg beyond +/-{s.max_tilt_deg:g} deg")
    plan.reasons = reasons
    plan.safe = not reasons
    return plan


def _line_path(anat: _Anatomy, p: np.ndarray, u: np.ndarray, pullback_mm: float, s: PlanSettings
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Entry and target of the line through ``p`` along ``u``: where it leaves the bone backwards, and
    ``pullback_mm`` beyond the minimum tip distance short of where it leaves it forwards."""
    if not anat.surface.inside(p[None])[0]:
        return None
    t_back, t_fwd = anat.surface.ray_hit_mm(np.vstack([p, p]), np.vstack([-u, u]))
    stop = s.min_tip_to_cortex_mm + max(pullback_mm, 0.0)
    if not (np.isfinite(t_back) and np.isfinite(t_fwd)) or t_fwd <= stop:
        return None
    return p - t_back * u, p + (t_fwd - stop) * u


def _refine(anat: _Anatomy, start: PathPlan, pivot_mm: np.ndarray, s: PlanSettings) -> PathPlan:
    """Largest smallest clearance over lines near the start (through the pedicle), under the constraints."""
    u0 = start.axis
    e1, e2 = perpendicular_basis(u0)
    t_fwd0 = float(anat.surface.ray_hit_mm(pivot_mm[None], u0[None])[0])
    pull0 = max(0.0, t_fwd0 - float((start.target_mm - pivot_mm) @ u0) - s.min_tip_to_cortex_mm)
    lo, hi = s.medial_angle_deg

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        u = u0 + x[2] * e1 + x[3] * e2
        return pivot_mm + x[0] * e1 + x[1] * e2, u / np.linalg.norm(u), pull0 + x[4]

    def cost(x: np.ndarray) -> float:
        p, u, pull = unpack(x)
        ends = _line_path(anat, p, u, pull, s)
        if ends is None or x[4] < -pull0:
            return 1e3 + float(np.linalg.norm(x))
        entry, target = ends
        prof = anat.surface.clearance(entry, target, dock_mm=s.dock_mm, step_mm=1.0, n_directions=16)
        in_body = (entry + prof.depth_mm[:, None] * u - anat.posterior_wall_mm) @ anat.axes.anterior > 0
        c = prof.clearance_mm - s.body_extra_clearance_mm * in_body
        low = np.sort(c)[: max(1, len(c) // 10)]
        # The wall ahead of the tip and to its side, which radial rays at the tip do not see.
        tip = float(anat.surface.distance(target[None])[0]) - s.body_extra_clearance_mm
        value = -(min(float(c.min()), tip) + 0.1 * float(low.mean()))
        med, tilt = anat.angles_deg(start.side, u)
        m = s.limit_margin
        pen = max(0.0, lo + m - med) + max(0.0, med - hi + m) + max(0.0, abs(tilt) - s.max_tilt_deg + m)
        # mm short of the anterior third
        pen += max(0.0, (s.anterior_fraction - anat.depth_fraction(target)) * anat.body_depth_mm + m)
        pen += max(0.0, m - anat.lateral_of_midline_mm(start.side, target))
        # Degrees and millimetres past a limit weigh alike; an impossible line costs far more (1e3).
        return value + 2.0 * pen

    steps = np.array([1.0, 1.0, np.radians(4.0), np.radians(4.0), 3.0])

    def descend(x0: np.ndarray) -> tuple[float, np.ndarray]:
        res = minimize(cost, x0, method="Nelder-Mead", options={"initial_simplex": np.vstack([x0, x0 + np.diag(steps)]),
                                                                "maxfev": s.max_evaluations, "xatol": 0.05, "fatol": 1e-3})
        return float(res.fun), res.x

    # Nelder-Mead stops in the first local optimum of this kinked cost: from the transferred path alone, the
    # ceiling's clearance on the true L1 moved by up to 1 mm when its landmarks moved 0.5 mm. So it also starts
    # from the axis shifted and tilted each way, and polishes the best once more.
    starts = [np.zeros(5)]
    if s.refine_starts > 1:
        for i in range(4):  # the two offsets, then the two angles
            for sign in (1.0, -1.0):
                x0 = np.zeros(5)
                x0[i] = sign * (s.refine_shift_mm if i < 2 else s.refine_tilt_rad)
                starts.append(x0)
    best = min((descend(x0) for x0 in starts), key=lambda r: r[0])
    best = min(best, descend(best[1]), key=lambda r: r[0])
    x = best[1] if best[0] <= cost(np.zeros(5)) else np.zeros(5)
    p, u, pull = unpack(x)
    ends = _line_path(anat, p, u, pull, s)
    if ends is None:
        return start
    return PathPlan(start.side, ends[0], ends[1], "refined")


def plan_vertebra(vertices_mm: np.ndarray, faces: np.ndarray, landmarks: dict[str, np.ndarray],
                  settings: PlanSettings | None = None, frame: str = "") -> VertebraPlan:
    """Both paths on a closed vertebra surface whose model landmarks (incl. the path annotations) are given."""
    s = settings or PlanSettings()
    anat = _Anatomy(BoneSurface(vertices_mm, faces), landmarks)
    paths = {}
    for side in SIDES:
        names = (f"{side}_path_entry", f"{side}_path_target", f"{side}_pedicle_centre")
        missing = [n for n in names if n not in landmarks]
        if missing:
            raise PathGeometryError(f"the shape model has no {side} path annotation ({', '.join(missing)})")
        start = PathPlan(side, np.asarray(landmarks[names[0]], float), np.asarray(landmarks[names[1]], float), "transfer")
        if start.length_mm < 1.0:
            raise PathGeometryError(f"the {side} path's entry and target coincide on this surface")
        plan = _refine(anat, start, np.asarray(landmarks[names[2]], float), s) if s.refine else start
        paths[side] = assess_path(anat, plan, s)
    return finish_pair(anat, paths, s, frame)


def finish_pair(anat: _Anatomy, paths: dict[str, PathPlan], s: PlanSettings, frame: str) -> VertebraPlan:
    """The pair's convergence (angle between the axes in the axial plane) against its limits."""
    if len(paths) != 2:
        return VertebraPlan(paths, float("nan"), s, frame)
    sup = anat.axes.superior
    axial = [p.axis - (p.axis @ sup) * sup for p in paths.values()]
    axial = [a / np.linalg.norm(a) for a in axial]
    conv = float(np.degrees(np.arccos(np.clip(axial[0] @ axial[1], -1.0, 1.0))))
    lo, hi = s.convergence_deg
    if not lo <= conv <= hi:
        for p in paths.values():
            p.reasons.append(f"the paths converge by {conv:.1f} deg, outside [{lo:g}, {hi:g}] deg")
            p.safe = False
    return VertebraPlan(paths, conv, s, frame)


def assess_pair(vertices_mm: np.ndarray, faces: np.ndarray, landmarks: dict[str, np.ndarray],
                paths: dict[str, tuple[np.ndarray, np.ndarray]], settings: PlanSettings | None = None, frame: str = "",
                method: str = "given") -> VertebraPlan:
    """The safety check alone, for paths planned elsewhere (a file, another planner), on this surface."""
    s = settings or PlanSettings()
    anat = _Anatomy(BoneSurface(vertices_mm, faces), landmarks)
    out = {side: assess_path(anat, PathPlan(side, np.asarray(e, float), np.asarray(t, float), method), s)
           for side, (e, t) in paths.items()}
    return finish_pair(anat, out, s, frame)
