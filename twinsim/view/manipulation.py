"""Virtual-to-real manipulation: a needle-guide pose chosen in the twin, checked there, then made by the robot.

A person (the view's gizmo, or a script) proposes a guide pose in ``ref``. :meth:`GuideManipulator.check` judges
it in the twin at once, in the order a person would want the reason: the pose within the robot's reach (nominal
model, soft limits), the pose itself clear of every body, a joint path to it clear (direct, or planned around
what is in the way), and the guide's marker and the patient reference in the tracker's view there.
:meth:`GuideManipulator.move` carries a passed check out, and only after the person confirmed it: the planned
path through the same guarded arm, interlocks and motion log as the procedure's (the arm is stopped when the
reference or the guide leaves the tracker's view or the reference moves), then the closed loop on the
tracker's reading of the guide until its tip and axis are within tolerance.

Nothing here reads the simulation's truth: the pose, the check and the correction come from the twin's world,
the calibration, joint readings and tracker frames.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.hal.errors import HalError
from twinsim.hal.interfaces import Tracker
from twinsim.motion.execution import Watch, run_watched
from twinsim.motion.guarded_arm import GuardedArm
from twinsim.motion.planner import MotionPlanner, MotionRefused, PlannedMotion, limit_margin_rad
from twinsim.robot.kinematics import IKError
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import KinematicModel, TwinSync

STALE_RAD = 1e-3  # the robot moved since the check (by more than this at any joint): the check no longer holds


class ManipulationError(RuntimeError):
    """A move asked of the manipulator that it will not make: unchecked, refused, unconfirmed or out of date."""


@dataclass
class Verdict:
    """The twin's judgement of one proposed guide pose (``ref``, mm)."""

    T_ref_tool_mm: np.ndarray
    ok: bool
    reason: str  # why refused; what was checked when passed
    q_start_rad: np.ndarray
    q_goal_rad: np.ndarray | None = None
    motion: PlannedMotion | None = None
    check_s: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)  # each check in order: True, or why it failed

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, "checks": self.checks, "check_s": self.check_s,
                "tip_ref_mm": self.T_ref_tool_mm[:3, 3].tolist(), "axis_ref": self.T_ref_tool_mm[:3, 2].tolist(),
                "motion": self.motion.summary() if self.motion is not None else None}


@dataclass
class MoveOutcome:
    verdict: Verdict
    ok: bool
    message: str
    tracked_tip_error_mm: float | None = None
    tracked_axis_error_deg: float | None = None
    corrections: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "tracked_tip_error_mm": self.tracked_tip_error_mm,
                "tracked_axis_error_deg": self.tracked_axis_error_deg, "closed_loop_moves": self.corrections,
                "seconds": self.seconds, "check": self.verdict.summary()}


class GuideManipulator:
    """Checks and makes guide poses chosen in the twin; one at a time (the twin's world is not shared by threads)."""

    def __init__(self, planner: MotionPlanner, arm: GuardedArm, tracker: Tracker, model: KinematicModel,
                 calibration: CalibrationSet, T_cam_ref_registered_mm: np.ndarray, speed_factor: float = 0.2,
                 tol_mm: float = 0.25, tol_deg: float = 0.25,
                 on_move: Callable[[MoveOutcome], None] | None = None) -> None:
        self.planner, self.arm, self.tracker, self.model, self.cal = planner, arm, tracker, model, calibration
        self.T_cam_ref_registered_mm = np.asarray(T_cam_ref_registered_mm, dtype=np.float64)
        self.speed_factor, self.tol_mm, self.tol_deg = speed_factor, tol_mm, tol_deg
        self.on_move = on_move  # told of each move made (the procedure's log and the twin's timeline)
        self.lock = threading.Lock()
        self.moves: list[MoveOutcome] = []

    def tool_pose_mm(self) -> np.ndarray:
        """Where the guide is now by the joint readings (the gizmo's starting pose)."""
        return self.planner.tool_pose_mm(self.arm.read_joints_rad())

    def check(self, T_ref_tool_mm: np.ndarray) -> Verdict:
        """Judge a guide pose in the twin: reach, the pose's clearance, a clear joint path, the markers in sight."""
        T = frames.as_transform(np.asarray(T_ref_tool_mm, dtype=np.float64), "proposed guide pose")
        with self.lock:
            t0 = time.perf_counter()
            q0 = self.arm.read_joints_rad()
            v = Verdict(T, False, "", q0)
            try:
                v.q_goal_rad = q = self.planner.ik_tool(T, q0)
            except IKError as exc:
                v.checks["reach"] = f"out of the robot's reach: {exc}"
                return self._done(v, t0)
            v.checks["reach"] = True
            v.checks["joint_limit_margin_rad"] = limit_margin_rad(q)
            hit, _ = self.planner.world.contacts(q)
            if hit is not None:
                v.checks["pose_clear"] = f"the pose itself is too close: {hit.describe()}"
                return self._done(v, t0)
            v.checks["pose_clear"] = True
            hidden = self.planner.hidden_marker(q)
            if hidden is not None:
                v.checks["in_sight"] = f"{hidden} would be hidden from the tracker at that pose"
                return self._done(v, t0)
            v.checks["in_sight"] = True
            try:
                v.motion = self.planner.plan("to the pose chosen in the view", q0, q)
            except MotionRefused as exc:
                v.checks["path_clear"] = f"no clear path to it: {exc.reason}"
                return self._done(v, t0)
            v.checks["path_clear"] = True
            v.ok = True
            return self._done(v, t0)

    @staticmethod
    def _done(v: Verdict, t0: float) -> Verdict:
        v.check_s = time.perf_counter() - t0
        failed = [why for why in v.checks.values() if isinstance(why, str)]
        if failed:
            v.reason = failed[0]
        else:
            m = v.motion
            assert m is not None
            v.reason = (f"reachable ({v.checks['joint_limit_margin_rad']:.2f} rad to the nearest joint limit), clear, "
                        f"markers in the tracker's view; {m.method} path of {m.timing.duration_s:.1f} s, "
                        f"{m.check.configurations} configurations checked")
        return v

    def move(self, verdict: Verdict, confirmed: bool) -> MoveOutcome:
        """Make a checked pose: refused (nothing sent) unless the check passed, the person confirmed it, and the
        robot still stands where the check started. HAL errors (an interlock) stop the arm and are reported."""
        if not verdict.ok or verdict.motion is None:
            raise ManipulationError(f"the pose was refused by the twin ({verdict.reason}): nothing sent to the robot")
        if not confirmed:
            raise ManipulationError("the move was not confirmed: nothing sent to the robot")
        with self.lock:
            t0 = time.perf_counter()
            q_now = self.arm.read_joints_rad()
            if np.max(np.abs(q_now - verdict.q_start_rad)) > STALE_RAD:
                raise ManipulationError("the robot has moved since the pose was checked: check it again "
                                        "(nothing sent to the robot)")
            watch = Watch(self.tracker, self.T_cam_ref_registered_mm)
            try:
                run_watched(self.arm, verdict.motion.waypoints_rad[1:], watch, self.speed_factor, verdict.motion.name)
                res = TwinSync(self.tracker, self.arm, self.model, self.cal).move_tool(
                    verdict.T_ref_tool_mm, closed_loop=True, tol_mm=self.tol_mm, tol_deg=self.tol_deg)
            except (HalError, MotionRefused, IKError) as exc:
                out = MoveOutcome(verdict, False, f"stopped: {exc}", seconds=time.perf_counter() - t0)
            else:
                tip, ang = res.measured_error_mm[-1], res.measured_axis_error_deg[-1]
                msg = (f"the guide is at the pose: the tracker sees its tip {tip:.2f} mm and its axis {ang:.2f} deg "
                       f"from it after {res.iterations} closed-loop moves" if res.converged else
                       f"the closed loop did not converge: the tracker sees the tip {tip:.2f} mm and the axis "
                       f"{ang:.2f} deg from the pose after {res.iterations} moves")
                out = MoveOutcome(verdict, res.converged, msg, tip, ang, res.iterations, time.perf_counter() - t0)
            self.moves.append(out)
        if self.on_move is not None:
            self.on_move(out)
        return out
