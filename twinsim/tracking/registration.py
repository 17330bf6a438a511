"""Patient (and device) registration: paired points with FRE and predicted TRE, and surface ICP.

Paired-point registration uses scikit-surgerycore's orthogonal Procrustes and Fitzpatrick's
FRE/TRE predictions from the fiducial localisation error (FLE). Surface registration fits
pointer-collected bone points to the CT bone surface with Open3D's point-to-plane ICP from
several perturbed starts, keeping the best, because ICP alone settles in the nearest minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial.transform import Rotation
from sksurgerycore.algorithms.errors import compute_fre_from_fle, compute_tre_from_fle
from sksurgerycore.algorithms.procrustes import orthogonal_procrustes

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.shape.build import icp, sample_surface
from twinsim.tracking.calibration import CalibrationError

MIN_SPREAD_MM = 5.0  # second principal extent (RMS) below this: the points are (nearly) collinear
MIN_SURFACE_POINTS = 12


@dataclass
class PairedPointResult:
    T_fixed_moving_mm: np.ndarray
    fre_mm: float  # RMS residual over the fiducials
    expected_fre_mm: float  # what the FLE predicts (NaN without an FLE)
    tre_mm: np.ndarray  # predicted RMS TRE at each target (empty without targets or FLE)
    n_points: int


@dataclass
class SurfaceResult:
    T_fixed_moving_mm: np.ndarray  # moving = the surface's frame (ct), fixed = the points' frame
    rms_mm: float  # RMS point-to-surface distance after the fit
    inlier_fraction: float  # points within 2 mm of the surface
    n_points: int
    n_starts: int


def _points(p: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise CalibrationError(f"{what} must be an (N, 3) array of points in mm, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise CalibrationError(f"{what} holds NaN or infinite values (a fiducial not tracked?)")
    return a


def _check_spread(p: np.ndarray, what: str) -> None:
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False) / np.sqrt(len(p))
    if sv[1] < MIN_SPREAD_MM:
        raise CalibrationError(f"{what} are (nearly) collinear (spread {np.round(sv, 2).tolist()} mm): the rotation about "
                               "their line is undetermined; use points that span a plane or a volume")


def paired_point_register(fixed_mm: np.ndarray, moving_mm: np.ndarray, fle_rms_mm: float | None = None,
                          targets_moving_mm: np.ndarray | None = None) -> PairedPointResult:
    """Rigid ``T_fixed_moving`` from corresponding points; FRE, and with an FLE the expected FRE and TRE."""
    f = _points(fixed_mm, "fixed fiducials")
    m = _points(moving_mm, "moving fiducials")
    if len(f) != len(m):
        raise CalibrationError(f"paired-point registration needs the same number of fixed and moving points, got {len(f)} and {len(m)}")
    if len(f) < 3:
        raise CalibrationError(f"paired-point registration needs at least 3 fiducials, got {len(f)}")
    _check_spread(m, "the fiducials")
    R, t, fre = orthogonal_procrustes(f, m)
    T = frames.make_transform(R, np.ravel(t))
    expected, tre = np.nan, np.empty(0)
    if fle_rms_mm is not None:
        fle2 = float(fle_rms_mm) ** 2
        expected = float(np.sqrt(compute_fre_from_fle(m, fle2)))
        if targets_moving_mm is not None:
            tg = _points(np.atleast_2d(targets_moving_mm), "targets")
            tre = np.array([np.sqrt(compute_tre_from_fle(m, fle2, p[None])) for p in tg])
    return PairedPointResult(T, float(fre), expected, tre, len(f))


def surface_register(points_mm: np.ndarray, surface: SurfaceMesh, T_points_surface_init_mm: np.ndarray,
                     n_starts: int = 12, start_rotation_deg: float = 8.0, start_translation_mm: float = 5.0,
                     seed: int = 0) -> SurfaceResult:
    """Refine ``T_points_surface`` so the collected points lie on the surface (mm).

    Starts are the initial guess and ``n_starts - 1`` perturbations of it (seeded); the fit
    with the smallest RMS point-to-surface distance wins.
    """
    pts = _points(points_mm, "surface points")
    if len(pts) < MIN_SURFACE_POINTS:
        raise CalibrationError(f"surface registration needs at least {MIN_SURFACE_POINTS} points, got {len(pts)}")
    _check_spread(pts, "the surface points")
    T0 = frames.as_transform(T_points_surface_init_mm, "initial registration")
    dense = sample_surface(surface.to_open3d(), 60_000, seed)
    scene = surface.raycasting_scene()
    rng = np.random.default_rng(seed)
    c = pts.mean(0)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for k in range(n_starts):
        # Perturb about the points' centroid so a rotation does not also throw them far away.
        dR = np.eye(3) if k == 0 else Rotation.from_rotvec(
            rng.normal(size=3) / np.sqrt(3) * np.deg2rad(start_rotation_deg)).as_matrix()
        dt = np.zeros(3) if k == 0 else rng.normal(size=3) / np.sqrt(3) * start_translation_mm
        P = frames.make_transform(dR, c - dR @ c + dt)
        T_surface_points0 = frames.invert(P @ T0)
        T_sp, _ = icp(pts, dense, T_surface_points0, radii=(10.0, 5.0, 2.5, 1.5))
        d = scene.compute_distance(o3d.core.Tensor(frames.transform_points(T_sp, pts).astype(np.float32))).numpy()
        rms = float(np.sqrt(np.mean(d**2)))
        if best is None or rms < best[0]:
            best = (rms, T_sp, d)
    rms, T_sp, d = best
    return SurfaceResult(frames.invert(T_sp), rms, float(np.mean(d < 2.0)), len(pts), n_starts)
