"""Calibrations of the tracking chain, each with its residual and predicted uncertainty.

Pivot calibration (scikit-surgerycalibration): a tracked tool rotated about its tip, resting
in a divot, gives the tip offset in the tool frame and the divot position in the camera frame.
The remaining calibrations (hand-eye, robot-world, paired-point, surface) follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation
from sksurgerycalibration.algorithms.pivot import pivot_calibration

from twinsim.errors import TwinsimError

MIN_PIVOT_FRAMES = 10
MIN_SECOND_AXIS_DEG = 5.0  # rotation spread about a second axis needed to fix the tip along the first


class CalibrationError(TwinsimError, ValueError):
    """The data cannot determine the calibration (too few poses, degenerate motion, ...)."""


@dataclass
class PivotResult:
    tip_offset_mm: np.ndarray  # tip in the tool frame
    pivot_point_mm: np.ndarray  # divot in the tracker (camera) frame
    residual_rms_mm: float  # RMS of the tip position residuals, per component
    tip_offset_sd_mm: np.ndarray  # predicted standard deviation of tip_offset_mm from the residual
    n_frames: int
    rotation_spread_deg: np.ndarray  # RMS rotation about the three principal axes of the motion


def rotation_spread_deg(R: np.ndarray) -> np.ndarray:
    mean = Rotation.from_matrix(R).mean()
    rv = (mean.inv() * Rotation.from_matrix(R)).as_rotvec()
    return np.degrees(np.sqrt(np.linalg.svd(rv.T @ rv / len(rv), compute_uv=False)))


def require_two_rotation_axes(R: np.ndarray, min_deg: float, what: str, consequence: str) -> np.ndarray:
    """The rotation spread of poses (N, 3, 3); a CalibrationError when it has fewer than two axes."""
    spread = rotation_spread_deg(R)
    if spread[1] < min_deg:
        raise CalibrationError(f"{what} about one axis only (spread {np.round(spread, 1).tolist()} deg): {consequence} "
                               f"(> {min_deg} deg about each of two axes)")
    return spread


def pivot_calibrate(T_cam_tool_mm: np.ndarray) -> PivotResult:
    """Pivot calibration from tracker poses (N, 4, 4) in mm; missing (NaN) frames are dropped."""
    T = np.asarray(T_cam_tool_mm, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise CalibrationError(f"pivot calibration needs an (N, 4, 4) array of tool poses, got shape {T.shape}")
    T = T[np.isfinite(T[:, :3, :]).all(axis=(1, 2))]
    if len(T) < MIN_PIVOT_FRAMES:
        raise CalibrationError(f"pivot calibration needs at least {MIN_PIVOT_FRAMES} tracked poses, got {len(T)}")
    spread = require_two_rotation_axes(T[:, :3, :3], MIN_SECOND_AXIS_DEG, "pivot poses rotate",
                                       "the tip position along that axis is undetermined; tilt the tool in two directions")
    offset, pivot, residual = pivot_calibration(T)
    # Least squares R_i p + t_i = q for x = (p, q): covariance sigma^2 (A^T A)^-1 with A_i = [R_i, -I].
    A = np.concatenate([np.hstack([Ti[:3, :3], -np.eye(3)]) for Ti in T])
    cov = residual**2 * np.linalg.inv(A.T @ A)
    return PivotResult(np.ravel(offset), np.ravel(pivot), float(residual), np.sqrt(np.diag(cov)[:3]), len(T), spread)


def pivot_motion(T_world_divot: np.ndarray, tip_offset_mm: np.ndarray, n: int, max_tilt_deg: float = 30.0,
                 seed: int = 0) -> list[np.ndarray]:
    """Ground-truth tool poses (world, metres) pivoting about a divot: tilts in two directions and spin.

    Simulation only: what a person does with the pointer in the divot.
    """
    rng = np.random.default_rng(seed)
    tip_m = np.asarray(tip_offset_mm, dtype=np.float64) * 1e-3
    poses = []
    for _ in range(n):
        tilt = Rotation.from_rotvec(np.r_[rng.uniform(-1, 1, 2) * np.deg2rad(max_tilt_deg), rng.uniform(-0.3, 0.3)])
        R = T_world_divot[:3, :3] @ tilt.as_matrix()
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = T_world_divot[:3, 3] - R @ tip_m  # keeps the tool's tip on the divot
        poses.append(T)
    return poses
