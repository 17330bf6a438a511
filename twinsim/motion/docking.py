"""Where the needle guide goes for a path: docked on its axis short of the skin, and the approach behind it.

The path (entry on the bone, target in the body) is the planner's, in ``ref``. The guide's tip
docks on the path's axis ``dock_standoff_mm`` outside where the axis leaves the patient
envelope, bore along the axis; the approach pose is further back on the same axis, by the first
of ``approach_mm`` the arm reaches. Only the roll about the axis is free: each candidate roll is solved on the nominal model
and kept when both poses are reachable within the soft limits, clear of every body, and the
guide's marker stays in the tracker's view at both poses in the twin; the best joint-limit margin wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.motion.envelope import PatientEnvelope
from twinsim.motion.planner import MotionPlanner, SightLine, Unreachable, limit_margin_rad
from twinsim.robot import panda
from twinsim.robot.kinematics import IKError


@dataclass(frozen=True)
class DockSettings:
    dock_standoff_mm: float = 15.0  # guide tip to the skin, on the axis
    # Approach pose behind the dock, on the axis: the first length the arm reaches at that roll. Near the edge
    # of the arm's reach the full 30 mm may be out of it where 5 mm is not; the advance stays a straight line.
    approach_mm: tuple[float, ...] = (30.0, 15.0, 5.0)
    rolls: int = 12  # candidate rolls about the axis
    min_limit_margin_rad: float = 0.05


@dataclass
class DockPlan:
    side: str
    T_dock_mm: np.ndarray
    T_approach_mm: np.ndarray
    q_dock_rad: np.ndarray
    q_approach_rad: np.ndarray
    roll_deg: float
    limit_margin_rad: float
    skin_exit_mm: np.ndarray
    insertion_mm: float  # guide tip (docked) to the planned target along the axis
    marker_in_sight: bool
    approach_back_mm: float = 30.0  # the approach pose's distance behind the dock

    def summary(self) -> dict[str, Any]:
        return {"side": self.side, "roll_deg": self.roll_deg, "limit_margin_rad": self.limit_margin_rad,
                "dock_tip_mm": self.T_dock_mm[:3, 3].tolist(), "axis": self.T_dock_mm[:3, 2].tolist(),
                "skin_exit_mm": self.skin_exit_mm.tolist(), "insertion_mm": self.insertion_mm,
                "marker_in_sight": self.marker_in_sight, "approach_back_mm": self.approach_back_mm}


def tool_frame(tip_mm: np.ndarray, axis: np.ndarray, roll_rad: float) -> np.ndarray:
    """``T_ref_tool`` with its tip at ``tip_mm``, z along ``axis``, x turned by ``roll_rad`` about it."""
    z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x0 = np.cross(helper, z)
    x0 /= np.linalg.norm(x0)
    x = frames.rotation_about_axis(z, roll_rad) @ x0
    return frames.make_transform(np.column_stack([x, np.cross(z, x), z]), tip_mm)


def _first_solution(planner: MotionPlanner, T_ref_tool_mm: np.ndarray, seeds: list[np.ndarray]) -> np.ndarray | None:
    for seed in seeds:
        try:
            return planner.ik_tool(T_ref_tool_mm, seed)
        except IKError:
            continue
    return None


def plan_dock(planner: MotionPlanner, side: str, entry_mm: np.ndarray, target_mm: np.ndarray, envelope: PatientEnvelope,
              q_seeds_rad: list[np.ndarray], settings: DockSettings | None = None, sight: SightLine | None = None) -> DockPlan:
    """The best reachable, clear docking of the guide on a path; raises :class:`Unreachable` naming why none is."""
    s = settings or DockSettings()
    axis = (target_mm - entry_mm) / np.linalg.norm(target_mm - entry_mm)
    exit_mm = envelope.exit_along_mm(entry_mm, -axis)
    dock_tip = exit_mm - axis * s.dock_standoff_mm
    # Also from the first seed turned about joint 1 to face the dock: the damped IK then starts on the right side.
    tip_base = frames.transform_points(frames.invert(planner.world.T_ref_base_m), dock_tip * 1e-3)
    aimed = np.array(q_seeds_rad[0], dtype=np.float64)
    aimed[0] = np.clip(np.arctan2(tip_base[1], tip_base[0]), *panda.SOFT_LIMITS_RAD[0])
    q_seeds_rad = [*q_seeds_rad, aimed]
    best: DockPlan | None = None
    why: dict[str, int] = {}
    for roll in np.arange(s.rolls) * 2 * np.pi / s.rolls:
        T_dock = tool_frame(dock_tip, axis, roll)
        q_dock = _first_solution(planner, T_dock, ([best.q_dock_rad] if best is not None else []) + q_seeds_rad)
        if q_dock is None:
            why["docked pose out of reach"] = why.get("docked pose out of reach", 0) + 1
            continue
        q_app = None
        for back_mm in s.approach_mm:
            T_app = tool_frame(dock_tip - axis * back_mm, axis, roll)
            if (q_app := _first_solution(planner, T_app, [q_dock, *q_seeds_rad])) is not None:
                break
        if q_app is None:
            why["approach pose out of reach"] = why.get("approach pose out of reach", 0) + 1
            continue
        margin = min(limit_margin_rad(q_dock), limit_margin_rad(q_app))
        if margin < s.min_limit_margin_rad:
            why["too near a joint limit"] = why.get("too near a joint limit", 0) + 1
            continue
        hits = [h for h in (planner.world.contacts(q)[0] for q in (q_dock, q_app)) if h is not None]
        if hits:
            key = f"too close: {hits[0].link} vs {hits[0].body}"
            why[key] = why.get(key, 0) + 1
            continue
        seen = sight is None or all(planner.marker_in_sight(q, sight) for q in (q_dock, q_app))
        cand = DockPlan(side, T_dock, T_app, q_dock, q_app, float(np.degrees(roll)), margin, exit_mm,
                        float(np.linalg.norm(target_mm - dock_tip)), seen, back_mm)
        if best is None or (cand.marker_in_sight, cand.limit_margin_rad) > (best.marker_in_sight, best.limit_margin_rad):
            best = cand
    if best is None:
        raise Unreachable(f"docking the guide on the {side} path",
                          f"no roll of {s.rolls} about the axis works: " + "; ".join(f"{k} ({v})" for k, v in why.items()))
    return best
