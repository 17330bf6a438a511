"""Visual guidance from the twin's timeline: the needle guide against the pose it is being brought to, and the
patient reference against where it stood at registration.

During a guide's step the target is that side's dock pose (the plan's axis, the guide's tip at the dock):
the guide's tip and bore axis come from its tracked marker through the pivot and axis calibration, as the
closed loop measures them. The reference is compared in the camera's frame, as the procedure's interlock
compares it (``motion.execution.Watch``): a moved patient shows at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.tracking.tools import NEEDLE_MARKER
from twinsim.view.timeline import Timeline

# Bands: on target within the closed loop's reach; close within what one correction step covers.
ON_TARGET_MM, ON_TARGET_DEG = 0.5, 0.5
CLOSE_MM, CLOSE_DEG = 5.0, 5.0
# The reference against its registration pose: the interlock's tolerances.
REFERENCE_MM, REFERENCE_DEG = 1.0, 0.5


@dataclass(frozen=True)
class Guidance:
    side: str | None  # the guide being placed now, or None
    T_target_mm: np.ndarray | None  # the dock pose in ref (z along the bore)
    distance_mm: float | None  # guide tip to the target's tip; None when the guide is not tracked
    angle_deg: float | None
    band: str | None  # "on target", "close", "far", or "not tracked"
    reference_moved_mm: float | None  # since registration; None before it or when the reference is not seen
    reference_turned_deg: float | None
    reference_band: str | None  # "still" or "moved"

    def lines(self) -> list[str]:
        out = []
        if self.side is not None:
            if self.distance_mm is None:
                out.append(f"{self.side} guide: not tracked")
            else:
                out.append(f"{self.side} guide: {self.distance_mm:.1f} mm and {self.angle_deg:.1f} deg to its dock ({self.band})")
        if self.reference_band is not None:
            out.append(f"patient reference: {self.reference_moved_mm:.2f} mm / {self.reference_turned_deg:.2f} deg from "
                       f"registration ({self.reference_band}{': register again' if self.reference_band == 'moved' else ''})")
        return out


def _band(d_mm: float, a_deg: float) -> str:
    if d_mm <= ON_TARGET_MM and a_deg <= ON_TARGET_DEG:
        return "on target"
    return "close" if d_mm <= CLOSE_MM and a_deg <= CLOSE_DEG else "far"


def guidance_at(tl: Timeline, k: int) -> Guidance:
    """What the guidance shows at sample ``k``."""
    side = T_target = distance = angle = band = None
    steps = tl.steps_at(k) if tl.events else []
    current = steps[-1] if steps else None
    docks, cal = tl.layer_at("docks", k), tl.layer_at("guide_calibration", k)
    if current is not None and current.state == "running" and current.step in ("guide left", "guide right") \
            and docks is not None and cal is not None:
        s = current.step.split()[-1]
        sides = [str(x) for x in docks["sides"]]
        if s in sides:
            side, T_target = s, np.asarray(docks["T_dock_mm"][sides.index(s)], dtype=np.float64)
            T_marker = tl.T_ref_tools_mm[k][tl.tools.index(NEEDLE_MARKER)] if NEEDLE_MARKER in tl.tools else None
            if T_marker is not None and np.isfinite(T_marker).all():
                tip = frames.transform_points(T_marker, cal["needle_tip_mm"])
                axis = T_marker[:3, :3] @ cal["needle_axis"]
                distance = float(np.linalg.norm(tip - T_target[:3, 3]))
                angle = frames.angle_between_deg(axis, T_target[:3, 2])
                band = _band(distance, angle)
            else:
                band = "not tracked"
    moved = turned = ref_band = None
    camera = tl.layer_at("camera", k)
    T_now = tl.T_cam_ref_mm[k] if k < len(tl.T_cam_ref_mm) else None
    if camera is not None and T_now is not None and np.isfinite(T_now).all():
        D = camera["T_ref_cam_mm"] @ T_now  # the registration's inverse composed with the reference now
        moved = float(np.linalg.norm(D[:3, 3]))
        turned = float(np.degrees(Rotation.from_matrix(D[:3, :3]).magnitude()))
        ref_band = "still" if moved <= REFERENCE_MM and turned <= REFERENCE_DEG else "moved"
    return Guidance(side, T_target, distance, angle, band, moved, turned, ref_band)
