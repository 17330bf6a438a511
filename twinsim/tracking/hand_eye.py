"""Hand-eye (AX = XB) and robot-world (AX = ZB) calibration of a marker on a robot's flange.

The tracker sees a marker on the flange while the robot reports its flange pose. Unknowns:
``T_flange_marker`` (hand-eye, X) and ``T_fixed_base`` (robot-world, Z), where ``fixed`` is
any frame still during the motion: the tracker camera, or better the patient reference,
which keeps the result valid when the camera moves. OpenCV solves the linear problem
(``calibrateHandEye``, ``calibrateRobotWorldHandEye``); a least-squares refinement over the
marker positions follows, since the linear methods weigh rotations and translations ad hoc.

OpenCV's names map onto ours as: its camera is our flange marker, its world/target is our
fixed frame, its gripper our flange.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.tracking.calibration import CalibrationError, require_two_rotation_axes, rotation_spread_deg

MIN_POSES = 6
MIN_ROTATION_SPREAD_DEG = 5.0  # about the second principal axis of the flange's rotations
_RAD_TO_MM = 100.0  # weighs 1 rad of rotation residual like 100 mm (a marker ~100 mm across)


@dataclass
class HandEyeResult:
    T_flange_marker_mm: np.ndarray  # X
    T_fixed_base_mm: np.ndarray  # Z (for hand-eye alone: the mean over poses)
    residual_mm: float  # RMS of marker origin, predicted through the chain vs measured
    residual_deg: float  # RMS marker rotation, predicted vs measured
    n_poses: int
    rotation_spread_deg: np.ndarray


def _check(T_base_flange_mm: np.ndarray, T_fixed_marker_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    B = np.asarray(T_base_flange_mm, dtype=np.float64)
    A = np.asarray(T_fixed_marker_mm, dtype=np.float64)
    if B.ndim != 3 or B.shape[1:] != (4, 4) or A.shape != B.shape:
        raise CalibrationError(f"hand-eye calibration needs two (N, 4, 4) pose arrays of equal length, got {B.shape} and {A.shape}")
    keep = np.isfinite(A[:, :3, :]).all(axis=(1, 2)) & np.isfinite(B[:, :3, :]).all(axis=(1, 2))
    A, B = A[keep], B[keep]
    if len(A) < MIN_POSES:
        raise CalibrationError(f"hand-eye calibration needs at least {MIN_POSES} poses with the marker tracked, got {len(A)}")
    require_two_rotation_axes(B[:, :3, :3], MIN_ROTATION_SPREAD_DEG, "the flange rotates",
                              "hand-eye calibration is undetermined along that axis; rotate the flange")
    return A, B


def _split(Ts: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [T[:3, :3].copy() for T in Ts], [T[:3, 3:].copy() for T in Ts]


def _residuals(A: np.ndarray, B: np.ndarray, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = Z @ B @ X
    d_mm = np.linalg.norm(pred[:, :3, 3] - A[:, :3, 3], axis=1)
    d_rad = np.linalg.norm(Rotation.from_matrix(np.transpose(pred[:, :3, :3], (0, 2, 1)) @ A[:, :3, :3]).as_rotvec(), axis=1)
    return d_mm, d_rad


def _refine(A: np.ndarray, B: np.ndarray, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (frames.make_transform(Rotation.from_rotvec(x[:3]).as_matrix(), x[3:6]),
                frames.make_transform(Rotation.from_rotvec(x[6:9]).as_matrix(), x[9:12]))

    def fun(x: np.ndarray) -> np.ndarray:
        Xi, Zi = unpack(x)
        pred = Zi @ B @ Xi
        rot = Rotation.from_matrix(np.transpose(pred[:, :3, :3], (0, 2, 1)) @ A[:, :3, :3]).as_rotvec()
        return np.concatenate([(pred[:, :3, 3] - A[:, :3, 3]).ravel(), _RAD_TO_MM * rot.ravel()])

    x0 = np.r_[Rotation.from_matrix(X[:3, :3]).as_rotvec(), X[:3, 3], Rotation.from_matrix(Z[:3, :3]).as_rotvec(), Z[:3, 3]]
    return unpack(least_squares(fun, x0, method="lm").x)


def _result(A: np.ndarray, B: np.ndarray, X: np.ndarray, Z: np.ndarray) -> HandEyeResult:
    X, Z = _refine(A, B, X, Z)
    d_mm, d_rad = _residuals(A, B, X, Z)
    return HandEyeResult(X, Z, float(np.sqrt(np.mean(d_mm**2))), float(np.degrees(np.sqrt(np.mean(d_rad**2)))), len(A),
                         rotation_spread_deg(B[:, :3, :3]))


def hand_eye_calibrate(T_base_flange_mm: np.ndarray, T_fixed_marker_mm: np.ndarray) -> HandEyeResult:
    """AX = XB: the marker on the flange (``T_flange_marker``) from robot and tracker poses (N, 4, 4), mm."""
    A, B = _check(T_base_flange_mm, T_fixed_marker_mm)
    R_g2b, t_g2b = _split(B)
    R_t2c, t_t2c = _split(np.array([frames.invert(T) for T in A]))
    R, t = cv2.calibrateHandEye(R_g2b, t_g2b, R_t2c, t_t2c, method=cv2.CALIB_HAND_EYE_PARK)
    X = frames.make_transform(R, np.ravel(t))
    Zs = A @ frames.invert(X) @ np.array([frames.invert(T) for T in B])
    Z = frames.make_transform(Rotation.from_matrix(Zs[:, :3, :3]).mean().as_matrix(), Zs[:, :3, 3].mean(0))
    return _result(A, B, X, Z)


def robot_world_calibrate(T_base_flange_mm: np.ndarray, T_fixed_marker_mm: np.ndarray) -> HandEyeResult:
    """AX = ZB: the robot base in the fixed frame (``T_fixed_base``) and the flange marker, jointly."""
    A, B = _check(T_base_flange_mm, T_fixed_marker_mm)
    R_w2c, t_w2c = _split(np.array([frames.invert(T) for T in A]))
    R_b2g, t_b2g = _split(np.array([frames.invert(T) for T in B]))
    R_b2w, t_b2w, R_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(R_w2c, t_w2c, R_b2g, t_b2g,
                                                                 method=cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH)
    Z = frames.make_transform(R_b2w, np.ravel(t_b2w))
    X = frames.invert(frames.make_transform(R_g2c, np.ravel(t_g2c)))
    return _result(A, B, X, Z)
