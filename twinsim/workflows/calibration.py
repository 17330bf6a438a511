"""The whole calibration chain, through the HAL: the same code on the simulated room and a real rig.

Each step has a human part, done by the ``Operator`` (pivoting the pointer, hand-guiding the
robot about its tip, touching bone), and a computation that sees only tracker frames and
joint readings. Steps:

1. pointer pivot (scikit-surgerycalibration) -> pointer tip;
2. needle-guide tip pivot with the robot in a divot -> tip in the needle-guide marker
   (tracker) and the TCP in the flange frame (joint readings, nominal kinematics); the same
   with a calibration rod in the guide's bore, pivoted about its tip -> a second point on the
   axis, so the axis is measured in both frames, not assumed from CAD;
3. the robot visits poses around home -> hand-eye (AX = XB) and robot-world (AX = ZB),
   flange-marker poses taken in the patient reference frame;
4. patient registration: the pointer touches anatomical fiducials (paired points, FRE and
   predicted TRE), then bone surface points (ICP from several starts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from twinsim import frames
from twinsim.hal import Arm, HalError, Operator, Tracker
from twinsim.robot.kinematics import IKError
from twinsim.tracking.calibration import CalibrationError, PivotResult, pivot_calibrate
from twinsim.tracking.fiducials import RegistrationTarget
from twinsim.tracking.hand_eye import hand_eye_calibrate, robot_world_calibrate
from twinsim.tracking.registration import paired_point_register, surface_register
from twinsim.tracking.tools import NEEDLE_MARKER, OPERATION_FLANGE, POINTER, REFERENCE
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import KinematicModel
from twinsim.twin.tracker_view import ToolIndex, TrackingLost

SETTLE_FRAMES = 3  # 50 ms at 60 Hz: longer than the tracker's latency, so no frame predates a move


@dataclass(frozen=True)
class SessionSettings:
    pivot_poses: int = 120
    tip_pivot_poses: int = 30
    hand_eye_poses: int = 20
    hand_eye_rotation_deg: float = 20.0
    hand_eye_translation_mm: float = 40.0
    frames_per_pose: int = 10
    fiducial_fle_mm: float = 1.0  # touching an anatomical landmark through its soft tissue
    surface_points: int = 40
    surface_touch_mm: float = 0.3  # pointer tip on exposed bone
    axis_rod_extension_mm: float = 100.0  # the calibration rod's tip beyond the guide's tip
    speed_factor: float = 0.2
    seed: int = 0


def read_frames(tracker: Tracker, n: int, settle: int = SETTLE_FRAMES) -> list[tuple]:
    for _ in range(settle):
        tracker.get_frame()
    return [tracker.get_frame() for _ in range(n)]


def _tip_in_ref(idx: ToolIndex, fr: list[tuple], tip_mm: np.ndarray) -> np.ndarray:
    try:
        return frames.transform_points(idx.pose_in(fr, POINTER, REFERENCE), tip_mm)
    except TrackingLost:
        return np.full(3, np.nan)


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 10.0:
        raise CalibrationError(f"{what} cannot be found: the rod's tip pivoted {n:.1f} mm from the guide's tip (expected its extension)")
    return v / n


def _guide_pivot(arm: Arm, tracker: Tracker, idx: ToolIndex, model: KinematicModel, operator: Operator, s: SessionSettings,
                 rod_extension_mm: float) -> tuple[PivotResult, PivotResult]:
    """One hand-guided pivot: the pivot point in the needle-guide marker (tracker) and in the flange (joint readings)."""
    readings, needle_cam = [], []
    for _ in operator.hand_guide_tip_pivot(arm, s.tip_pivot_poses, rod_extension_mm):
        fr = read_frames(tracker, s.frames_per_pose)
        readings.append(arm.read_joints_rad())
        try:
            needle_cam.append(idx.pose(fr, NEEDLE_MARKER))
        except TrackingLost:
            needle_cam.append(np.full((4, 4), np.nan))
    return (pivot_calibrate(np.array(needle_cam)),
            pivot_calibrate(np.array([frames.scale_translation(model.fk_m(q), 1000.0) for q in readings])))


def run_calibration(arm: Arm, tracker: Tracker, model: KinematicModel, operator: Operator, target: RegistrationTarget,
                    settings: SessionSettings | None = None, progress: bool | None = None) -> CalibrationSet:
    s = settings or SessionSettings()
    rng = np.random.default_rng(s.seed)
    idx = ToolIndex(tracker)
    residuals: dict[str, dict] = {}
    steps = tqdm(total=4, desc="calibration", unit="step", disable=None if progress is None else not progress)

    # 1. Pointer pivot.
    operator.say("Step 1 of 4: pointer pivot calibration.")
    poses = []
    for _ in operator.pivot_pointer(s.pivot_poses):
        try:
            poses.append(idx.pose(read_frames(tracker, 1), POINTER))
        except TrackingLost:
            poses.append(np.full((4, 4), np.nan))
    piv = pivot_calibrate(np.array(poses))
    residuals["pointer_pivot"] = {"rms_mm": piv.residual_rms_mm, "tip_sd_mm": piv.tip_offset_sd_mm.tolist(), "poses": piv.n_frames}
    steps.update()

    # 2. Needle-guide tip in a divot, robot hand-guided about it; then a rod in the bore, pivoted about its tip.
    operator.say("Step 2 of 4: needle-guide tip pivot (robot in guiding mode), then the axis with the calibration rod.")
    tip_piv, tcp = _guide_pivot(arm, tracker, idx, model, operator, s, 0.0)
    rod_piv, rod_tcp = _guide_pivot(arm, tracker, idx, model, operator, s, s.axis_rod_extension_mm)
    for key, p in (("needle_tip_pivot", tip_piv), ("tcp_pivot", tcp), ("axis_rod_pivot", rod_piv), ("axis_rod_tcp_pivot", rod_tcp)):
        residuals[key] = {"rms_mm": p.residual_rms_mm, "tip_sd_mm": p.tip_offset_sd_mm.tolist(), "poses": p.n_frames}
    needle_axis = _unit(rod_piv.tip_offset_mm - tip_piv.tip_offset_mm, "the guide's axis in its marker")
    z = _unit(rod_tcp.tip_offset_mm - tcp.tip_offset_mm, "the guide's axis in the flange")
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z  # keep the flange's x: the bore has no roll of its own
    x /= np.linalg.norm(x)
    T_flange_tool = frames.make_transform(np.column_stack([x, np.cross(z, x), z]), tcp.tip_offset_mm)
    residuals["needle_axis"] = {"tilt_from_flange_z_deg": float(np.degrees(np.arccos(np.clip(z[2], -1, 1)))),
                                "rod_extension_mm": s.axis_rod_extension_mm,
                                "rod_length_measured_mm": float(np.linalg.norm(rod_piv.tip_offset_mm - tip_piv.tip_offset_mm))}
    steps.update()

    # 3. Hand-eye and robot-world from poses about home.
    operator.say("Step 3 of 4: the robot visits poses around home (hand-eye).")
    q_home = arm.read_joints_rad()
    T_home = model.fk_m(q_home)
    B, A = [], []
    for _ in range(s.hand_eye_poses):
        dR = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(s.hand_eye_rotation_deg)).as_matrix()
        dt = rng.uniform(-1, 1, 3) * s.hand_eye_translation_mm * 1e-3
        T = frames.make_transform(T_home[:3, :3] @ dR, T_home[:3, 3] + dt)
        try:
            arm.move_joints(model.ik(T, q_home), speed_factor=s.speed_factor)
        except IKError:
            continue
        except HalError as exc:  # e.g. a reflex: recover, go home, skip this pose
            operator.say(f"pose skipped: {exc}")
            arm.recover()
            arm.move_joints(q_home, speed_factor=s.speed_factor)
            continue
        fr = read_frames(tracker, s.frames_per_pose)
        try:
            A.append(idx.pose_in(fr, OPERATION_FLANGE, REFERENCE))
        except TrackingLost:
            continue
        B.append(frames.scale_translation(model.fk_m(arm.read_joints_rad()), 1000.0))
    arm.move_joints(q_home, speed_factor=s.speed_factor)
    he = hand_eye_calibrate(np.array(B), np.array(A))
    rw = robot_world_calibrate(np.array(B), np.array(A))
    residuals["hand_eye"] = {"rms_mm": he.residual_mm, "rms_deg": he.residual_deg, "poses": he.n_poses}
    residuals["robot_world"] = {"rms_mm": rw.residual_mm, "rms_deg": rw.residual_deg, "poses": rw.n_poses,
                                "hand_eye_agreement_mm": float(np.linalg.norm(he.T_flange_marker_mm[:3, 3] - rw.T_flange_marker_mm[:3, 3]))}
    steps.update()

    # 4. Patient registration: fiducials, then bone surface points on the posterior elements.
    operator.say("Step 4 of 4: patient registration.")
    fid_ref = np.array([_tip_in_ref(idx, read_frames(tracker, s.frames_per_pose), piv.tip_offset_mm)
                        for _ in operator.touch_landmarks(target.fiducial_names)])
    ok = np.isfinite(fid_ref).all(axis=1)
    if ok.sum() < 3:
        raise CalibrationError(f"only {int(ok.sum())} fiducials were tracked; the pointer was occluded at: "
                               + ", ".join(n for n, k in zip(target.fiducial_names, ok, strict=True) if not k))
    pp = paired_point_register(fid_ref[ok], target.fiducials_ct_mm[ok], fle_rms_mm=s.fiducial_fle_mm,
                               targets_moving_mm=target.target_ct_mm)
    surf_ref = np.array([_tip_in_ref(idx, read_frames(tracker, s.frames_per_pose), piv.tip_offset_mm)
                         for _ in operator.touch_surface(s.surface_points)])
    surf_ref = surf_ref[np.isfinite(surf_ref).all(axis=1)]
    sr = surface_register(surf_ref, target.surface, pp.T_fixed_moving_mm, seed=s.seed)
    residuals["paired_point"] = {"fre_mm": pp.fre_mm, "expected_fre_mm": pp.expected_fre_mm,
                                 "predicted_tre_at_target_mm": float(pp.tre_mm[0]), "fiducials": target.fiducial_names,
                                 "tracked": int(ok.sum())}
    residuals["surface"] = {"rms_mm": sr.rms_mm, "inlier_fraction": sr.inlier_fraction, "points": sr.n_points,
                            "starts": sr.n_starts}
    steps.update()
    steps.close()
    return CalibrationSet(T_flange_marker=rw.T_flange_marker_mm, T_ref_base=rw.T_fixed_base_mm, T_flange_tool=T_flange_tool,
                          T_ref_ct=sr.T_fixed_moving_mm, pointer_tip_mm=piv.tip_offset_mm, needle_tip_mm=tip_piv.tip_offset_mm,
                          needle_axis=needle_axis, residuals=residuals)
