"""Joint trajectories for the operation robot, planned and checked in the twin before any motion.

A motion is first tried as the direct joint segment; where that comes too close to a body (or,
once the guide's marker and the camera are known, hides the marker from the tracker for longer
than the interlock allows), OMPL's RRT-Connect plans around it in joint space (soft limits as
bounds, the twin's contact query and then the marker's visibility as the validity check) and its
simplified path is checked again, densely, by the twin: that dense check, not the sampler's,
decides. Straight-line tool motions (the advance along a needle path) are solved pose by pose on
the nominal model and checked the same way. Every accepted path is time-parametrised with ruckig
and its tracker frames checked for the marker's visibility; a refused one names the body pair,
where on the path and the clearance, or how long the marker would be hidden.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybullet as pb

from twinsim import frames
from twinsim.motion.timing import TimedPath, time_path
from twinsim.motion.twin_world import PathCheck, TwinWorld
from twinsim.robot import panda
from twinsim.robot.kinematics import IKError
from twinsim.tracking.volume import FRAME_RATE_HZ, MIN_VISIBLE_SPHERES, MeasurementVolume


class MotionRefused(RuntimeError):
    """A motion the twin will not let the robot make: it collides, comes too close, or cannot be reached."""

    def __init__(self, what: str, reason: str, check: PathCheck | None = None) -> None:
        super().__init__(f"{what} refused before any motion: {reason}")
        self.what, self.reason, self.check = what, reason, check


class Unreachable(MotionRefused):
    """No joint configuration of the nominal robot puts the tool at the pose within the soft limits."""


@dataclass(frozen=True)
class SightLine:
    """The guide's marker (in the tool frame) and the camera (``T_ref_cam``), mm: the twin keeps the tracker's view of
    the marker along a motion, frame by frame at the tracker's rate, as the tracker itself would judge it: each
    sphere in the measurement volume with a clear ray to the camera, and enough of them."""

    T_tool_marker_mm: np.ndarray
    T_ref_cam_mm: np.ndarray
    spheres_marker_mm: np.ndarray | None = None  # the tool definition; None: one ray from the marker's origin
    volume: MeasurementVolume = MeasurementVolume()
    rate_hz: float = FRAME_RATE_HZ
    min_spheres: int = MIN_VISIBLE_SPHERES
    # Fewer than the interlock's 6 lost frames: the twin's bodies are models, a grazing ray may be blocked for real.
    max_blind_frames: int = 2
    # A sphere counts as seen only when the rays from four points this far around it are clear too: in the room
    # the operation robot's own hand and wrist grazed the rays (its closed loop moves it off the planned joints),
    # and the twin, ray on the centre only, passed advances that lost the marker for 7 frames.
    rim_mm: float = 6.0
    # The patient reference's spheres in ref (its own frame): the arm must not hide it either, or the interlock
    # stops the motion as it does for the guide (seen in the room on the right approach of some plans).
    reference_spheres_ref_mm: np.ndarray | None = None

    @property
    def camera_ref_mm(self) -> np.ndarray:
        return self.T_ref_cam_mm[:3, 3]


@dataclass
class PlannedMotion:
    name: str
    waypoints_rad: np.ndarray
    check: PathCheck
    method: str  # "direct", "RRT-Connect" or "straight line"
    timing: TimedPath
    planning_s: float
    refused_first: PathCheck | None = None  # the direct path's check when it had to plan around
    blind_first: str | None = None  # why the direct path was refused for the marker's line of sight

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "waypoints": len(self.waypoints_rad),
                "configurations_checked": self.check.configurations, "check_s": self.check.seconds,
                "min_clearance_mm": _finite(self.check.min_clearance_mm), "duration_s": self.timing.duration_s,
                "planning_s": self.planning_s,
                "direct_path_refused": self.blind_first if self.refused_first is None else self.refused_first.describe()}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def limit_margin_rad(q_rad: np.ndarray) -> float:
    """Smallest distance of any joint to its soft limit."""
    q = np.asarray(q_rad)
    return float(np.min(np.minimum(q - panda.SOFT_LIMITS_RAD[:, 0], panda.SOFT_LIMITS_RAD[:, 1] - q)))


class MotionPlanner:
    def __init__(self, world: TwinWorld, model: Any, T_flange_tool_mm: np.ndarray, speed_factor: float = 0.2,
                 ompl_time_s: float = 10.0, seed: int = 0) -> None:
        self.world, self.model = world, model
        self.T_flange_tool_mm = frames.as_transform(T_flange_tool_mm, "T_flange_tool")
        self.speed_factor, self.ompl_time_s, self.seed = speed_factor, ompl_time_s, seed
        self.sight: SightLine | None = None  # set once the tracker has seen the guide's marker

    # ---- kinematics ---------------------------------------------------------------------
    def ik_tool(self, T_ref_tool_mm: np.ndarray, q_seed_rad: np.ndarray) -> np.ndarray:
        """Joints putting the needle guide at ``T_ref_tool_mm`` (nominal model, soft limits); raises IKError."""
        T_base_flange_mm = frames.invert(frames.scale_translation(self.world.T_ref_base_m, 1000.0)) @ T_ref_tool_mm \
            @ frames.invert(self.T_flange_tool_mm)
        return self.model.ik(frames.scale_translation(T_base_flange_mm, 1e-3), q_seed_rad, panda.FLANGE_LINK)

    def tool_pose_mm(self, q_rad: np.ndarray) -> np.ndarray:
        T_base_flange = frames.scale_translation(self.model.fk_m(q_rad, panda.FLANGE_LINK), 1000.0)
        return frames.scale_translation(self.world.T_ref_base_m, 1000.0) @ T_base_flange @ self.T_flange_tool_mm

    # ---- line of sight ------------------------------------------------------------------
    def marker_in_sight(self, q_rad: np.ndarray, sight: SightLine | None = None) -> bool:
        """Whether the tracker would see the guide's marker (and the patient reference) with the robot at ``q_rad``."""
        return self.hidden_marker(q_rad, sight) is None

    def hidden_marker(self, q_rad: np.ndarray, sight: SightLine | None = None) -> str | None:
        """Which marker the tracker would lose with the robot at ``q_rad``, in the twin (None: it sees them all)."""
        sight = sight or self.sight
        if sight is None:
            return None
        T_ref_marker = self.tool_pose_mm(q_rad) @ sight.T_tool_marker_mm
        local = np.zeros((1, 3)) if sight.spheres_marker_mm is None else sight.spheres_marker_mm
        need = 1 if sight.spheres_marker_mm is None else min(sight.min_spheres, len(local))
        self.world.set_joints(q_rad)
        # From just off each sphere (its own mount does not hide it) to short of the camera the navigation robot holds.
        if not self._seen(sight, frames.transform_points(T_ref_marker, local), need,
                          12.0 if sight.spheres_marker_mm is not None else 30.0):
            return "the guide's marker"
        ref = sight.reference_spheres_ref_mm
        if ref is not None and not self._seen(sight, ref, min(sight.min_spheres, len(ref)), 12.0):
            return "the patient reference"
        return None

    def _seen(self, sight: SightLine, spheres: np.ndarray, need: int, off_mm: float) -> bool:
        inside = sight.volume.contains(frames.transform_points(frames.invert(sight.T_ref_cam_mm), spheres))
        if inside.sum() < need:
            return False
        d = sight.camera_ref_mm - spheres
        u = d / np.linalg.norm(d, axis=1, keepdims=True)
        e1, e2 = frames.perpendicular_basis(u)
        rims = [np.zeros_like(u)] + [sight.rim_mm * s * e for e in (e1, e2) for s in (1.0, -1.0)]
        a = np.concatenate([spheres + r + u * off_mm for r in rims]) * 1e-3
        b = np.concatenate([sight.camera_ref_mm - u * 150.0 + r for r in rims]) * 1e-3
        hits = pb.rayTestBatch(a.tolist(), b.tolist(), physicsClientId=self.world.client)
        clear = np.array([h[0] < 0 for h in hits]).reshape(len(rims), len(spheres)).all(axis=0) & inside
        return int(clear.sum()) >= need

    def blind_stretch(self, timing: TimedPath) -> str | None:
        """Why the timed path hides the marker for too long (None when it does not): the longest run of tracker
        frames without a line of sight, and where on the path it starts."""
        if self.sight is None:
            return None
        qs, where = timing.configurations_at(self.sight.rate_hz)
        run, start, worst, at, what = 0, 0.0, 0, 0.0, "the guide's marker"
        for q, w in zip(qs, where, strict=True):
            hidden = self.hidden_marker(q)
            if hidden is None:
                run = 0
                continue
            run, start = run + 1, (float(w) if run == 0 else start)
            if run > worst:
                worst, at, what = run, start, hidden
        if worst <= self.sight.max_blind_frames:
            return None
        return (f"{what} would be hidden from the camera for {worst} frames "
                f"({1000.0 * worst / self.sight.rate_hz:.0f} ms, at most {self.sight.max_blind_frames} allowed) "
                f"by waypoint {at:.2f} of the path")

    # ---- planning -----------------------------------------------------------------------
    def _accept(self, name: str, waypoints: Sequence[np.ndarray], method: str, t0: float,
                refused_first: PathCheck | None = None, blind_first: str | None = None) -> PlannedMotion:
        W = np.array([panda.check_joint_positions(q, f"{name} waypoint") for q in waypoints])
        check = self.world.check_path(W)
        if not check.ok:
            raise MotionRefused(name, check.describe(), check)
        timing = time_path(W, self.speed_factor)
        blind = self.blind_stretch(timing)
        if blind is not None:
            raise MotionRefused(name, blind)
        return PlannedMotion(name, W, check, method, timing, time.perf_counter() - t0, refused_first, blind_first)

    def plan(self, name: str, q_start_rad: np.ndarray, q_goal_rad: np.ndarray) -> PlannedMotion:
        """Direct joint segment if it is clear, else RRT-Connect around what is in the way; refused if neither."""
        t0 = time.perf_counter()
        for what, q in (("start", q_start_rad), ("goal", q_goal_rad)):
            hit, _ = self.world.contacts(q)
            if hit is not None:
                raise MotionRefused(name, f"the {what} configuration itself is too close: {hit.describe()}",
                                    PathCheck(False, 1, 0.0, hit, 0.0 if what == "start" else 1.0))
        direct = self.world.check_path([q_start_rad, q_goal_rad])
        blind = None
        if direct.ok:
            try:
                return self._accept(name, [q_start_rad, q_goal_rad], "direct", t0)
            except MotionRefused as exc:
                blind = exc.reason
        keep_sight = blind is not None or (self.sight is not None and not direct.ok)
        if keep_sight:
            hidden = [what for what, q in (("start", q_start_rad), ("goal", q_goal_rad)) if not self.marker_in_sight(q)]
            if hidden and blind is not None:  # no path keeps in sight what either end hides
                raise MotionRefused(name, f"{blind}: the {' and '.join(hidden)} pose itself hides it")
            keep_sight = not hidden
        path = self._rrt_connect(q_start_rad, q_goal_rad, keep_sight)
        if path is None:
            why = blind if blind is not None else f"the direct path is blocked ({direct.describe()})"
            raise MotionRefused(name, f"{why} and RRT-Connect found no way around in {self.ompl_time_s:g} s",
                                None if direct.ok else direct)
        return self._accept(name, path, "RRT-Connect", t0, None if direct.ok else direct, blind)

    def plan_line(self, name: str, q_start_rad: np.ndarray, T_from_mm: np.ndarray, T_to_mm: np.ndarray,
                  step_mm: float = 5.0, on_axis_tol_mm: float = 0.5) -> PlannedMotion:
        """The tool along the straight line from ``T_from_mm`` to ``T_to_mm`` (same orientation), solved pose by pose."""
        t0 = time.perf_counter()
        p0, p1 = T_from_mm[:3, 3], T_to_mm[:3, 3]
        n = max(2, int(np.ceil(np.linalg.norm(p1 - p0) / step_mm)) + 1)
        q, qs = np.asarray(q_start_rad, dtype=np.float64), []
        for s in np.linspace(0.0, 1.0, n):
            T = T_to_mm.copy()
            T[:3, 3] = p0 + s * (p1 - p0)
            try:
                q = self.ik_tool(T, q)
            except IKError as exc:
                raise Unreachable(name, f"the tool pose {s * 100:.0f} % along the line is out of reach: {exc}") from None
            off = np.linalg.norm(np.cross(self.tool_pose_mm(q)[:3, 3] - p0, (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-9)))
            if off > on_axis_tol_mm:
                raise MotionRefused(name, f"the tool leaves the line by {off:.2f} mm at {s * 100:.0f} %")
            qs.append(q)
        if np.max(np.abs(qs[0] - q_start_rad)) > 1e-3:
            qs.insert(0, np.asarray(q_start_rad, dtype=np.float64))
        return self._accept(name, qs, "straight line", t0)

    def _rrt_connect(self, q0: np.ndarray, q1: np.ndarray, keep_sight: bool = False) -> list[np.ndarray] | None:
        from ompl import base as ob
        from ompl import geometric as og
        from ompl import util as ou

        ou.setLogLevel(ou.LOG_WARN)
        ou.RNG.setSeed(self.seed + 1)
        space = ob.RealVectorStateSpace(7)
        bounds = ob.RealVectorBounds(7)
        for i, (lo, hi) in enumerate(panda.SOFT_LIMITS_RAD):
            bounds.setLow(i, float(lo))
            bounds.setHigh(i, float(hi))
        space.setBounds(bounds)
        ss = og.SimpleSetup(space)
        def valid(state: Any) -> bool:
            q = np.array([state[i] for i in range(7)])
            return self.world.contacts(q)[0] is None and (not keep_sight or self.marker_in_sight(q))

        ss.setStateValidityChecker(valid)
        si = ss.getSpaceInformation()
        si.setStateValidityCheckingResolution(self.world.settings.max_step_rad / space.getMaximumExtent())
        start, goal = space.allocState(), space.allocState()
        for i in range(7):
            start[i], goal[i] = float(q0[i]), float(q1[i])
        ss.setStartAndGoalStates(start, goal)
        ss.setPlanner(og.RRTConnect(si))
        if not ss.solve(self.ompl_time_s) or not ss.haveExactSolutionPath():
            return None
        ss.simplifySolution()
        p = ss.getSolutionPath()
        return [np.array([p.getState(k)[i] for i in range(7)]) for k in range(p.getStateCount())]
