"""Twin synchronisation in both directions, through the tracker and the calibration chain.

Real-to-virtual: tracker frames give the poses of the patient (through its reference marker
and the registration), the needle guide's tip and the C-arm's marker, all in the patient
reference frame ``ref`` (mm), so the twin follows when the camera or the patient moves.

Virtual-to-real: a tool pose set in the twin (``ref`` frame) is mapped through
``T_ref_base`` and ``T_flange_tool`` into the operation robot's base, solved with the
nominal kinematics and sent as a joint move. Open loop it inherits every calibration and
kinematic error; closed loop measures the guide's tip and axis with the tracker after each
move, and shifts and turns the command by what remains until both are within tolerance.

Nothing here reads simulation ground truth: inputs are tracker frames, joint readings and
the calibration file, so real drivers can replace the simulated ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from twinsim import frames
from twinsim.hal import Arm, Tracker
from twinsim.robot import panda
from twinsim.tracking.tools import NEEDLE_MARKER, REFERENCE
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.tracker_view import ToolIndex, TrackingLost


class KinematicModel(Protocol):
    def fk_m(self, q_rad: np.ndarray, link: str = ...) -> np.ndarray: ...
    def ik(self, T_base_link_m: np.ndarray, q0_rad: np.ndarray, link: str = ...) -> np.ndarray: ...


@dataclass
class TwinState:
    """What the twin knows now (``ref`` frame, mm)."""

    T_ref_ct: np.ndarray  # the patient's CT
    needle_tip_ref_mm: np.ndarray  # from the tracker (needle-guide marker + pivot calibration)
    needle_axis_ref: np.ndarray  # unit, from the tracker (needle-guide marker + axis calibration)
    needle_tip_from_joints_ref_mm: np.ndarray  # from joint readings, nominal kinematics and calibration
    T_ref_tool_joints: np.ndarray  # the needle guide's pose from the joint readings
    T_ref_markers: dict[str, np.ndarray] = field(default_factory=dict)  # every tracked tool
    missing: list[str] = field(default_factory=list)


@dataclass
class MoveResult:
    target_ref_mm: np.ndarray
    measured_ref_mm: list[np.ndarray]  # tracker-measured tip after each move
    converged: bool
    target_axis_ref: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    measured_axis_ref: list[np.ndarray] = field(default_factory=list)  # tracker-measured axis after each move

    @property
    def iterations(self) -> int:
        return len(self.measured_ref_mm)

    @property
    def measured_error_mm(self) -> list[float]:
        return [float(np.linalg.norm(m - self.target_ref_mm)) for m in self.measured_ref_mm]

    @property
    def measured_axis_error_deg(self) -> list[float]:
        return [frames.angle_between_deg(a, self.target_axis_ref) for a in self.measured_axis_ref]


class TwinSync:
    def __init__(self, tracker: Tracker, arm: Arm, model: KinematicModel, calibration: CalibrationSet,
                 n_frames: int = 20, settle_frames: int = 3) -> None:
        self.tracker, self.arm, self.model, self.cal = tracker, arm, model, calibration
        self.tools = ToolIndex(tracker)
        self.n_frames = n_frames
        self.settle_frames = settle_frames  # a real tracker reports with latency: no frame may predate a move

    def _frames(self) -> list[tuple]:
        for _ in range(self.settle_frames):
            self.tracker.get_frame()
        return [self.tracker.get_frame() for _ in range(self.n_frames)]

    def needle_tip_ref_mm(self, frame_list: list[tuple] | None = None) -> np.ndarray:
        """The needle guide's tip in ``ref`` as the tracker sees it."""
        return self.needle_ref(frame_list)[0]

    def needle_ref(self, frame_list: list[tuple] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The needle guide's tip (mm) and axis (unit) in ``ref`` as the tracker sees them."""
        f = frame_list or self._frames()
        T_ref_needle = self.tools.pose_in(f, NEEDLE_MARKER, REFERENCE)
        return frames.transform_points(T_ref_needle, self.cal.needle_tip_mm), T_ref_needle[:3, :3] @ self.cal.needle_axis

    def tool_pose_from_joints(self, q_rad: np.ndarray | None = None) -> np.ndarray:
        """``T_ref_tool`` (mm) from joint readings through the nominal model and the calibration."""
        q = self.arm.read_joints_rad() if q_rad is None else q_rad
        T_base_flange = frames.scale_translation(self.model.fk_m(q, panda.FLANGE_LINK), 1000.0)
        return self.cal.T_ref_base @ T_base_flange @ self.cal.T_flange_tool

    def update(self) -> TwinState:
        """Real-to-virtual: read the tracker and the robot and return the twin's estimate of the room."""
        f = self._frames()
        markers, missing = {}, []
        for name in self.tools.handle:
            if name == REFERENCE:
                continue
            try:
                markers[name] = self.tools.pose_in(f, name, REFERENCE)
            except TrackingLost:
                missing.append(name)
        if NEEDLE_MARKER in missing:
            tip, axis = np.full(3, np.nan), np.full(3, np.nan)
        else:
            tip = frames.transform_points(markers[NEEDLE_MARKER], self.cal.needle_tip_mm)
            axis = markers[NEEDLE_MARKER][:3, :3] @ self.cal.needle_axis
        T_joints = self.tool_pose_from_joints()
        return TwinState(self.cal.T_ref_ct, tip, axis, T_joints[:3, 3].copy(), T_joints, markers, missing)

    def joint_target(self, T_ref_tool_mm: np.ndarray) -> np.ndarray:
        """The joint command that puts the needle guide at ``T_ref_tool_mm`` by the calibration and nominal kinematics."""
        T_base_flange_mm = frames.invert(self.cal.T_ref_base) @ T_ref_tool_mm @ frames.invert(self.cal.T_flange_tool)
        return self.model.ik(frames.scale_translation(T_base_flange_mm, 1e-3), self.arm.read_joints_rad(), panda.FLANGE_LINK)

    def _command(self, T_ref_tool_mm: np.ndarray) -> None:
        self.arm.move_joints(self.joint_target(T_ref_tool_mm))

    def move_tool(self, T_ref_tool_target_mm: np.ndarray, closed_loop: bool = True, tol_mm: float = 0.25,
                  max_iterations: int = 6, tol_deg: float = 0.25) -> MoveResult:
        """Virtual-to-real: bring the needle guide to a pose set in the twin (``ref``, mm; z along the bore).

        Closed loop, the tracker measures the guide's tip and axis after each move; the command
        is turned by the rotation from the measured axis to the target's (about its tip) and
        shifted by the remaining tip error, until both are within ``tol_mm`` and ``tol_deg``.
        """
        T_target = frames.as_transform(T_ref_tool_target_mm, "tool target")
        target, target_axis = T_target[:3, 3].copy(), T_target[:3, 2].copy()
        T_cmd = T_target.copy()
        tips: list[np.ndarray] = []
        axes: list[np.ndarray] = []

        def within() -> bool:
            return (float(np.linalg.norm(target - tips[-1])) <= tol_mm
                    and frames.angle_between_deg(axes[-1], target_axis) <= tol_deg)

        for _ in range(max_iterations if closed_loop else 1):
            self._command(T_cmd)
            tip, axis = self.needle_ref()
            tips.append(tip)
            axes.append(axis)
            if closed_loop and within():
                break
            T_cmd = T_cmd.copy()
            T_cmd[:3, :3] = frames.rotation_between(axis, target_axis) @ T_cmd[:3, :3]
            T_cmd[:3, 3] += target - tip
        return MoveResult(target, tips, within(), target_axis, axes)
