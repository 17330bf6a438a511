"""The whole calibration chain, run in the simulated room as staff would run it on a real rig.

Each step has a physical part (a person pivots the pointer, touches bone; the robot moves
or is hand-guided in a divot), simulated in :mod:`twinsim.sim.hand_held`, and a computation
that sees only tracker frames and joint readings. Steps:

1. pointer pivot (scikit-surgerycalibration) -> pointer tip;
2. needle-guide tip pivot with the robot in a divot -> tip in the needle-guide marker
   (tracker) and the TCP in the flange frame (joint readings, nominal kinematics);
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
from twinsim.anatomy.landmarks import posterior_surface_mm, spinous_tip_mm, transverse_tips_mm
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.robot.nominal import NominalPanda
from twinsim.sim import hand_held
from twinsim.sim.robot_driver import SimulatedArm
from twinsim.sim.world import OperatingRoom, mesh_in_world_m
from twinsim.tracking.calibration import CalibrationError, pivot_calibrate
from twinsim.tracking.hand_eye import hand_eye_calibrate, robot_world_calibrate
from twinsim.tracking.registration import paired_point_register, surface_register
from twinsim.tracking.vega_sim import SimulatedVega
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import REFERENCE
from twinsim.twin.tracker_view import ToolIndex, TrackingLost


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
    seed: int = 0


def _fiducials_ct_mm(room: OperatingRoom) -> tuple[list[str], np.ndarray]:
    """Anatomical fiducials on the target level and its neighbour above (from the planning CT)."""
    levels = room.patient.levels
    target = room.config.patient.target_level
    above = levels[levels.index(target) - 1] if levels.index(target) > 0 else target
    names, pts = [], []
    for lvl in (above, target):
        m = room.patient.vertebra(lvl)
        left, right = transverse_tips_mm(m)
        names += [f"{lvl} left transverse tip", f"{lvl} right transverse tip"]
        pts += [left, right]
    names.append(f"{target} spinous tip")
    pts.append(spinous_tip_mm(room.patient.vertebra(target)))
    return names, np.array(pts)


def _touch_tips_ref(vega: SimulatedVega, idx: ToolIndex, pts_world_m: np.ndarray, pointer_tip_mm: np.ndarray,
                    true_tip_mm: np.ndarray, n_frames: int, seed: int) -> np.ndarray:
    """Pointer tips in ``ref`` (mm) for each touched point; NaN where the pointer was not tracked."""
    out = []
    for fr in hand_held.pointer_touch(vega, pts_world_m, true_tip_mm, n_frames=n_frames, seed=seed):
        try:
            T_ref_pointer = idx.pose_in(fr, "pointer", REFERENCE)
            out.append(frames.transform_points(T_ref_pointer, pointer_tip_mm))
        except TrackingLost:
            out.append(np.full(3, np.nan))
    return np.array(out)


def run_calibration(room: OperatingRoom, vega: SimulatedVega, arm: SimulatedArm, model: NominalPanda,
                    settings: SessionSettings | None = None, progress: bool | None = None) -> CalibrationSet:
    s = settings or SessionSettings()
    rng = np.random.default_rng(s.seed)
    idx = ToolIndex(vega)
    residuals: dict[str, dict] = {}
    steps = tqdm(total=4, desc="calibration", unit="step", disable=None if progress is None else not progress)

    # 1. Pointer pivot in a divot on a 15 cm block on the table beside the patient (raised into
    # the tracker's volume, which starts ~15 cm above the table top at this camera pose).
    true_tip = np.asarray(room.config.markers["pointer"].get("tip_mm", [0.0, -160.0, -20.0]), dtype=float)
    tc = room.config.table
    divot = np.array([0.25, -0.22, tc.top_height_m + 0.15])
    T_divot = hand_held.pointer_pose_touching(divot, true_tip, vega.T_world_cam_m())
    T_divot[:3, 3] = divot
    piv = pivot_calibrate(hand_held.pointer_pivot(vega, T_divot, true_tip, s.pivot_poses, seed=s.seed))
    residuals["pointer_pivot"] = {"rms_mm": piv.residual_rms_mm, "tip_sd_mm": piv.tip_offset_sd_mm.tolist(),
                                  "poses": piv.n_frames}
    steps.update()

    # 2. Needle-guide tip in a divot, robot hand-guided about it.
    readings, tracked = hand_held.tip_pivot(arm, s.tip_pivot_poses, seed=s.seed, vega=vega, n_frames=s.frames_per_pose)
    needle_cam = []
    for fr in tracked:
        try:
            needle_cam.append(idx.pose(fr, "needle_guide"))
        except TrackingLost:
            needle_cam.append(np.full((4, 4), np.nan))
    tip_piv = pivot_calibrate(np.array(needle_cam))
    tcp = pivot_calibrate(np.array([frames.scale_translation(model.fk_m(q), 1000.0) for q in readings]))
    residuals["needle_tip_pivot"] = {"rms_mm": tip_piv.residual_rms_mm, "tip_sd_mm": tip_piv.tip_offset_sd_mm.tolist(),
                                     "poses": tip_piv.n_frames}
    residuals["tcp_pivot"] = {"rms_mm": tcp.residual_rms_mm, "tip_sd_mm": tcp.tip_offset_sd_mm.tolist(), "poses": tcp.n_frames}
    # The guide's axis is the flange z axis by construction (CAD); the TCP position is measured.
    T_flange_tool = frames.make_transform(np.eye(3), tcp.tip_offset_mm)
    steps.update()

    # 3. Hand-eye and robot-world from poses about home.
    q_home = arm.read_joints_rad()
    T_home = model.fk_m(q_home)
    B, A = [], []
    for _ in range(s.hand_eye_poses):
        dR = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(s.hand_eye_rotation_deg)).as_matrix()
        dt = rng.uniform(-1, 1, 3) * s.hand_eye_translation_mm * 1e-3
        T = frames.make_transform(T_home[:3, :3] @ dR, T_home[:3, 3] + dt)
        try:
            q = arm.move_joints(model.ik(T, q_home))
        except (ValueError, RuntimeError):
            continue
        fr = hand_held.read_frames(vega, s.frames_per_pose)
        try:
            A.append(idx.pose_in(fr, "operation_flange", REFERENCE))
        except TrackingLost:
            continue
        B.append(frames.scale_translation(model.fk_m(q), 1000.0))
    arm.move_joints(q_home)
    he = hand_eye_calibrate(np.array(B), np.array(A))
    rw = robot_world_calibrate(np.array(B), np.array(A))
    residuals["hand_eye"] = {"rms_mm": he.residual_mm, "rms_deg": he.residual_deg, "poses": he.n_poses}
    residuals["robot_world"] = {"rms_mm": rw.residual_mm, "rms_deg": rw.residual_deg, "poses": rw.n_poses,
                                "hand_eye_agreement_mm": float(np.linalg.norm(he.T_flange_marker_mm[:3, 3] - rw.T_flange_marker_mm[:3, 3]))}
    steps.update()

    # 4. Patient registration: fiducials, then bone surface points on the posterior elements.
    names, fid_ct = _fiducials_ct_mm(room)
    fid_world = mesh_in_world_m(room.T_world_ct, fid_ct + rng.normal(0.0, s.fiducial_fle_mm / np.sqrt(3), fid_ct.shape))
    fid_ref = _touch_tips_ref(vega, idx, fid_world, piv.tip_offset_mm, true_tip, s.frames_per_pose, s.seed)
    ok = np.isfinite(fid_ref).all(axis=1)
    if ok.sum() < 3:
        raise CalibrationError(f"only {int(ok.sum())} fiducials were tracked; the pointer was occluded at: "
                               + ", ".join(n for n, k in zip(names, ok, strict=True) if not k))
    target_ct = room.patient.vertebra(room.config.patient.target_level).centroid_mm
    pp = paired_point_register(fid_ref[ok], fid_ct[ok], fle_rms_mm=s.fiducial_fle_mm, targets_moving_mm=target_ct)
    surface, touched_ct = _surface_points_ct(room, s.surface_points, rng)
    touched_world = mesh_in_world_m(room.T_world_ct, touched_ct + rng.normal(0, s.surface_touch_mm / np.sqrt(3), touched_ct.shape))
    surf_ref = _touch_tips_ref(vega, idx, touched_world, piv.tip_offset_mm, true_tip, s.frames_per_pose, s.seed + 1)
    surf_ref = surf_ref[np.isfinite(surf_ref).all(axis=1)]
    sr = surface_register(surf_ref, surface, pp.T_fixed_moving_mm, seed=s.seed)
    residuals["paired_point"] = {"fre_mm": pp.fre_mm, "expected_fre_mm": pp.expected_fre_mm,
                                 "predicted_tre_at_target_mm": float(pp.tre_mm[0]), "fiducials": names,
                                 "tracked": int(ok.sum())}
    residuals["surface"] = {"rms_mm": sr.rms_mm, "inlier_fraction": sr.inlier_fraction, "points": sr.n_points,
                            "starts": sr.n_starts}
    steps.update()
    steps.close()
    return CalibrationSet(T_flange_marker=rw.T_flange_marker_mm, T_ref_base=rw.T_fixed_base_mm, T_flange_tool=T_flange_tool,
                          T_ref_ct=sr.T_fixed_moving_mm, pointer_tip_mm=piv.tip_offset_mm, needle_tip_mm=tip_piv.tip_offset_mm,
                          residuals=residuals)


def _surface_points_ct(room: OperatingRoom, n: int, rng: np.random.Generator) -> tuple[SurfaceMesh, np.ndarray]:
    """The registration surface (target level) and ``n`` random points on its posterior elements."""
    mesh = room.patient.vertebra(room.config.patient.target_level)
    keep, _ = posterior_surface_mm(mesh)
    if len(keep) < n:
        raise CalibrationError(f"the posterior surface of {room.config.patient.target_level} has only {len(keep)} vertices")
    pick = rng.choice(keep, n, replace=False)
    # Random points on triangles around the picked vertices, not the vertices themselves.
    faces = mesh.faces
    pts = []
    for v in pick:
        around = np.flatnonzero((faces == v).any(axis=1))
        f = faces[around[rng.integers(len(around))]]
        w = rng.dirichlet(np.ones(3))
        pts.append(w @ mesh.vertices_mm[f])
    return mesh, np.array(pts)
