"""Hand-eye, robot-world, paired-point and surface registration recover known transforms from noisy data."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.shape.model import load_model
from twinsim.tracking.calibration import CalibrationError
from twinsim.tracking.hand_eye import hand_eye_calibrate, robot_world_calibrate
from twinsim.tracking.markers import load_marker
from twinsim.tracking.registration import paired_point_register, surface_register
from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega

X_TRUE = frames.make_transform(Rotation.from_euler("xyz", [10, -80, 25], degrees=True).as_matrix(), [5.0, -90.0, 20.0])
Z_TRUE = frames.make_transform(Rotation.from_euler("xyz", [170, 5, -40], degrees=True).as_matrix(), [-300.0, 340.0, 1800.0])


def _robot_poses(n, rot_deg=20.0, seed=0, axes=3):
    rng = np.random.default_rng(seed)
    home = frames.make_transform(Rotation.from_euler("x", 180, degrees=True).as_matrix(), [450.0, 50.0, 300.0])
    out = []
    for _ in range(n):
        rv = rng.normal(size=3) / np.sqrt(3) * np.deg2rad(rot_deg)
        rv[axes:] = 0.0
        out.append(frames.make_transform(home[:3, :3] @ Rotation.from_rotvec(rv).as_matrix(), home[:3, 3] + rng.uniform(-40, 40, 3)))
    return np.array(out)


def _tracked(B, seed=0):
    """The flange marker seen by the simulated Vega (its per-sphere noise), camera = the fixed frame."""
    state = {"T": None}
    vega = SimulatedVega({"seed": seed, "latency s": 0.0},
                         [SimulatedTool(1, load_marker("operation_flange"), lambda: frames.scale_translation(state["T"], 1e-3))],
                         lambda: np.eye(4))
    vega.start_tracking()
    out = []
    for Bi in B:
        state["T"] = Z_TRUE @ Bi @ X_TRUE
        out.append(np.mean([vega.get_frame()[3][0] for _ in range(5)], axis=0))
    # Averaging matrices is fine for tiny noise; re-orthonormalise the rotation.
    return np.array([frames.make_transform(Rotation.from_matrix(T[:3, :3]).as_matrix(), T[:3, 3]) for T in out])


@pytest.mark.parametrize("solve", [hand_eye_calibrate, robot_world_calibrate])
def test_hand_eye_and_robot_world_recover_known_transforms(solve):
    B = _robot_poses(20)
    A = _tracked(B)
    res = solve(B, A)
    # Least squares over N poses: the error shrinks like residual / sqrt(N); the lever arm from the
    # rotation centre to the marker (~100 mm) makes rotation errors count, hence the factor.
    bound = 6.0 * res.residual_mm / np.sqrt(res.n_poses) + 0.05
    assert np.linalg.norm(res.T_flange_marker_mm[:3, 3] - X_TRUE[:3, 3]) < bound
    assert np.linalg.norm(res.T_fixed_base_mm[:3, 3] - Z_TRUE[:3, 3]) < bound * 10  # 1.5 m from the camera
    rot_err = Rotation.from_matrix(res.T_flange_marker_mm[:3, :3].T @ X_TRUE[:3, :3]).magnitude()
    assert np.degrees(rot_err) < 0.2
    assert 0.005 < res.residual_mm < 0.2  # the tracker's noise, averaged over 5 frames


def test_hand_eye_refuses_degenerate_motion():
    B = _robot_poses(20, axes=1)  # rotations about one axis only
    with pytest.raises(CalibrationError, match="one axis only"):
        robot_world_calibrate(B, _tracked(B))
    B = _robot_poses(4)
    with pytest.raises(CalibrationError, match="at least 6"):
        hand_eye_calibrate(B, _tracked(B))
    with pytest.raises(CalibrationError, match=r"\(N, 4, 4\)"):
        hand_eye_calibrate(np.zeros((8, 3, 3)), np.zeros((8, 3, 3)))


def test_paired_point_fre_and_tre_match_the_fle():
    rng = np.random.default_rng(3)
    T = frames.make_transform(Rotation.from_euler("xyz", [30, -20, 100], degrees=True).as_matrix(), [10.0, 200.0, -50.0])
    fiducials = rng.uniform(-60, 60, (6, 3))
    target = np.array([[0.0, 0.0, 30.0]])
    fle = 1.0
    fre, tre, tre_pred = [], [], None
    for _ in range(300):
        measured = frames.transform_points(T, fiducials) + rng.normal(0, fle / np.sqrt(3), fiducials.shape)
        r = paired_point_register(measured, fiducials, fle_rms_mm=fle, targets_moving_mm=target)
        fre.append(r.fre_mm)
        tre.append(np.linalg.norm(frames.transform_points(r.T_fixed_moving_mm, target) - frames.transform_points(T, target)))
        tre_pred = r.tre_mm[0]
    # Fitzpatrick's predictions hold for the RMS over many trials.
    assert np.sqrt(np.mean(np.square(fre))) == pytest.approx(r.expected_fre_mm, rel=0.1)
    assert np.sqrt(np.mean(np.square(tre))) == pytest.approx(tre_pred, rel=0.2)


def test_paired_point_refuses_bad_fiducials():
    line = np.c_[np.linspace(0, 100, 5), np.zeros(5), np.zeros(5)]
    with pytest.raises(CalibrationError, match="collinear"):
        paired_point_register(line, line)
    with pytest.raises(CalibrationError, match="at least 3"):
        paired_point_register(np.eye(3)[:2], np.eye(3)[:2])
    with pytest.raises(CalibrationError, match="same number"):
        paired_point_register(np.eye(3), np.eye(4)[:, :3])
    bad = np.eye(3) * 50
    bad[1, 1] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        paired_point_register(bad, np.eye(3) * 50)


def test_surface_registration_recovers_a_known_pose_from_a_perturbed_start():
    m = load_model("L1")
    surface = SurfaceMesh(m.mean_mm, m.faces)
    rng = np.random.default_rng(1)
    posterior = m.mean_mm[m.mean_mm[:, 1] < np.percentile(m.mean_mm[:, 1], 40)]
    pts_ct = posterior[rng.choice(len(posterior), 40, replace=False)]
    T_true = frames.make_transform(Rotation.from_euler("xyz", [5, 80, -30], degrees=True).as_matrix(), [100.0, -20.0, 900.0])
    pts = frames.transform_points(T_true, pts_ct) + rng.normal(0, 0.2 / np.sqrt(3), pts_ct.shape)
    start = T_true @ frames.make_transform(Rotation.from_rotvec([0.08, -0.05, 0.06]).as_matrix(), [3.0, -2.0, 3.0])
    res = surface_register(pts, surface, start, seed=0)
    c = m.mean_mm.mean(0)
    err = np.linalg.norm(frames.transform_points(res.T_fixed_moving_mm, c) - frames.transform_points(T_true, c))
    start_err = np.linalg.norm(frames.transform_points(start, c) - frames.transform_points(T_true, c))
    assert err < 0.5 < start_err
    assert res.rms_mm < 0.5 and res.inlier_fraction > 0.95
    with pytest.raises(CalibrationError, match="at least 12"):
        surface_register(pts[:5], surface, start)
