"""Where to stand the operation robot so that both paths are reachable with margin and every C-arm view stays clear.

Searched in the twin: candidate cart placements on the floor around where the robot stands
now (shifts in its own base frame, turns about its vertical), each tried with the robot's
nominal model. A candidate counts when its cart clears the table, the guide docks on both
paths (see :mod:`docking`) within ``min_limit_margin_rad`` of the soft limits, and the robot
at rest (where it waits while X-rays are taken) clears the C-arm at every planned view; the C-arm
is parked away from the table while the robot moves.
The best (largest joint-limit margin, then the smallest move) is the recommendation, said as a
move of the cart that a set-up crew can make.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.motion.docking import DockSettings, plan_dock
from twinsim.motion.envelope import PatientEnvelope
from twinsim.motion.planner import MotionPlanner, MotionRefused


@dataclass(frozen=True)
class PlacementSettings:
    along_m: tuple[float, ...] = (-0.15, 0.0, 0.15, 0.3, 0.45)  # along the table, towards the head
    toward_m: tuple[float, ...] = (-0.1, 0.0, 0.1, 0.2)  # across it, towards the table
    turns_deg: tuple[float, ...] = (-30.0, -15.0, 0.0, 15.0, 30.0)
    min_limit_margin_rad: float = 0.15
    max_reach_mm: float = 1050.0  # shoulder to a dock beyond this is out of reach (arm 855 mm + flange + guide): not solved
    rolls: int = 12


@dataclass
class Placement:
    T_ref_base_mm: np.ndarray
    along_m: float  # along the table, towards the patient's head
    toward_m: float  # across the table, towards it
    turn_deg: float  # about the vertical, anticlockwise seen from above
    limit_margin_rad: float
    carm_views_clear: int

    def describe(self) -> str:
        parts = [f"{abs(self.along_m) * 100:.0f} cm towards the {'head' if self.along_m > 0 else 'feet'}" if self.along_m else "",
                 f"{abs(self.toward_m) * 100:.0f} cm {'closer to' if self.toward_m > 0 else 'away from'} the table" if self.toward_m else "",
                 f"turned {abs(self.turn_deg):.0f} deg {'anticlockwise' if self.turn_deg > 0 else 'clockwise'} seen from above"
                 if self.turn_deg else ""]
        move = ", ".join(p for p in parts if p) or "where it stands"
        return (f"move the operation robot's cart {move}; both paths then reach with {self.limit_margin_rad:.2f} rad to the "
                f"nearest joint limit, and the robot at rest clears the C-arm at all {self.carm_views_clear} views")

    def summary(self) -> dict[str, Any]:
        return {"along_m": self.along_m, "toward_m": self.toward_m, "turn_deg": self.turn_deg,
                "limit_margin_rad": self.limit_margin_rad, "carm_views_clear": self.carm_views_clear,
                "T_ref_base_mm": self.T_ref_base_mm.tolist(), "advice": self.describe()}


def search_placement(planner: MotionPlanner, paths: dict[str, tuple[np.ndarray, np.ndarray]], envelope: PatientEnvelope,
                     carm_sources_ref_mm: Sequence[np.ndarray], q_seeds_rad: list[np.ndarray],
                     settings: PlacementSettings | None = None, dock: DockSettings | None = None) -> tuple[Placement | None, int]:
    """The recommended placement (None if no candidate works) and how many candidates were tried."""
    s = settings or PlacementSettings()
    d = replace(dock or DockSettings(), rolls=s.rolls, min_limit_margin_rad=s.min_limit_margin_rad)
    world = planner.world
    T0 = frames.scale_translation(world.T_ref_base_m, 1000.0)
    carm_now = world.carm_source_ref_mm
    world.park_carm()
    table = world.table
    if table is None:
        raise ValueError("the placement search needs the twin's table (the survey) to know which way is along it")
    up, along = table.up, table.long_axis
    toward = table.centre_mm - T0[:3, 3]
    toward = toward - (toward @ up) * up - (toward @ along) * along
    toward /= np.linalg.norm(toward)
    candidates = sorted(itertools.product(s.along_m, s.toward_m, s.turns_deg),
                        key=lambda c: (np.hypot(c[0], c[1]), abs(c[2])))
    docks_mm = [e - (t - e) / np.linalg.norm(t - e) * 100.0 for e, t in paths.values()]  # near enough to the docks
    best: Placement | None = None
    tried = 0
    try:
        for a_m, t_m, turn in candidates:
            T = T0.copy()
            T[:3, :3] = frames.rotation_about_axis(up, np.deg2rad(turn)) @ T0[:3, :3]
            T[:3, 3] = T0[:3, 3] + (along * a_m + toward * t_m) * 1000.0
            shoulder = T[:3, 3] + T[:3, 2] * 333.0
            if max(np.linalg.norm(p - shoulder) for p in docks_mm) > s.max_reach_mm:
                continue
            world.move_base(T)
            tried += 1
            if world.cart_touches_static():
                continue
            try:
                docks = [plan_dock(planner, side, e, t, envelope, q_seeds_rad, d) for side, (e, t) in paths.items()]
            except MotionRefused:
                continue
            margin = min(k.limit_margin_rad for k in docks)
            clear = 0
            for src in carm_sources_ref_mm:
                world.set_carm(src)
                clear += world.contacts(q_seeds_rad[0])[0] is None
            world.park_carm()
            if clear < len(carm_sources_ref_mm):
                continue
            cand = Placement(T, float(a_m), float(t_m), float(turn), float(margin), clear)
            if best is None or cand.limit_margin_rad > best.limit_margin_rad + 0.05:
                best = cand
    finally:
        world.move_base(T0)
        if carm_now is None:
            world.park_carm()
        else:
            world.set_carm(carm_now)
    return best, tried
