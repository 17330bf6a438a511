"""Carrying a checked motion out through the HAL, with the interlocks that stop it.

While the arm moves the tracker is read every frame:

- the patient reference or the needle guide missing for longer than ``max_lost_frames``
  stops the arm (:class:`TrackingLostDuringMotion`);
- the patient reference seen away from where it was at registration, by more than
  ``reference_tol_mm`` / ``reference_tol_deg``, stops it too (:class:`ReferenceMoved`): the
  plan is in that reference's frame, so the patient must be registered again and the motions
  planned again before going on.

A ``MotionAborted`` from the robot (its collision reflex) is raised as it came: the procedure
stops, and never retries such a motion blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.hal.errors import HalError, ToolMissing
from twinsim.hal.interfaces import Tracker
from twinsim.motion.guarded_arm import GuardedArm
from twinsim.tracking.tools import NEEDLE_MARKER, REFERENCE
from twinsim.twin.tracker_view import ToolIndex, mean_pose


class TrackingLostDuringMotion(ToolMissing):
    """A tool the motion depends on left the tracker's view while the arm moved; the arm was stopped."""


class ReferenceMoved(HalError):
    """The patient reference is no longer where it was at registration: re-register and re-plan first."""

    def __init__(self, moved_mm: float, turned_deg: float, when: str) -> None:
        super().__init__("tracker", f"the patient reference moved {moved_mm:.2f} mm / {turned_deg:.2f} deg since registration "
                                    f"({when}): register the patient again and plan again before any further motion")
        self.moved_mm, self.turned_deg = moved_mm, turned_deg


@dataclass
class Watch:
    """What must hold while the operation robot moves, read from the tracker."""

    tracker: Tracker
    T_cam_ref_registered_mm: np.ndarray  # the reference as the camera saw it at registration
    max_lost_frames: int = 6  # 0.1 s at 60 Hz
    reference_tol_mm: float = 1.0
    reference_tol_deg: float = 0.5
    required: tuple[str, ...] = (REFERENCE, NEEDLE_MARKER)

    def __post_init__(self) -> None:
        self.tools = ToolIndex(self.tracker)

    def reference_offset(self, T_cam_ref_mm: np.ndarray) -> tuple[float, float]:
        d = frames.invert(self.T_cam_ref_registered_mm) @ T_cam_ref_mm
        return float(np.linalg.norm(d[:3, 3])), float(np.degrees(Rotation.from_matrix(d[:3, :3]).magnitude()))

    def check_reference(self, frame_list: Sequence[tuple], when: str) -> None:
        T = mean_pose(np.array([self._pose(f, REFERENCE) for f in frame_list]), REFERENCE)
        moved, turned = self.reference_offset(T)
        if moved > self.reference_tol_mm or turned > self.reference_tol_deg:
            raise ReferenceMoved(moved, turned, when)

    def _pose(self, frame: tuple, name: str) -> np.ndarray:
        handles = list(frame[0])
        h = self.tools.handle.get(name)
        if h is None or h not in handles:
            return np.full((4, 4), np.nan)
        return np.asarray(frame[3][handles.index(h)], dtype=np.float64)


def run_watched(arm: GuardedArm, waypoints_rad: Sequence[np.ndarray] | np.ndarray, watch: Watch, speed_factor: float,
                what: str) -> int:
    """Send a path (the guarded arm checks it first) and watch it to the end; returns the tracker frames read."""
    arm.follow_joint_path(waypoints_rad, speed_factor, asynchronous=True)
    lost = {name: 0 for name in watch.required}
    n = 0
    try:
        while arm.is_moving():
            f = watch.tracker.get_frame()
            n += 1
            for name in watch.required:
                ok = np.isfinite(watch._pose(f, name)[:3]).all()
                lost[name] = 0 if ok else lost[name] + 1
                if lost[name] > watch.max_lost_frames:
                    raise TrackingLostDuringMotion("tracker", f"{name} lost for {lost[name]} frames during {what}: the arm was "
                                                              "stopped; restore the line of sight, then resume")
            T_ref = watch._pose(f, REFERENCE)
            if np.isfinite(T_ref[:3]).all():
                moved, turned = watch.reference_offset(T_ref)
                if moved > 3 * watch.reference_tol_mm or turned > 3 * watch.reference_tol_deg:  # one frame: far beyond noise
                    raise ReferenceMoved(moved, turned, f"during {what}")
    except HalError:
        arm.stop()
        try:
            arm.wait()
        except HalError:
            pass  # the stop's own "motion aborted (stopped)": the interlock's error says why
        raise
    arm.wait()
    return n
