"""C-arm calibration: intrinsics and the C-arm marker-to-source transform from a tracked bead phantom.

Each exposure (a :class:`CArmShot`) pairs the beads' positions in the tracked frame (the
phantom's definition carried through its tracked marker) with their detected image centres
and the tracked pose of the C-arm's marker. With the detector's pixel spacing known (its
datasheet), one nonlinear least squares over all shots solves the source-detector distance,
the principal point and ``T_marker_source``, minimising the reprojection error; their
standard deviations follow from the Jacobian and the residual. The result turns any later
tracked exposure into a projection geometry in the tracked frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.tracking.calibration import CalibrationError

MIN_SHOTS = 2  # one view cannot separate the source-detector distance from depth
MIN_BEADS_PER_SHOT = 6


@dataclass(frozen=True)
class CArmShot:
    beads_ref_mm: np.ndarray  # (N, 3) bead centres in the tracked frame at exposure
    beads_px: np.ndarray  # (N, 2) detected centres (u, v); NaN rows: not detected
    T_ref_marker_mm: np.ndarray  # the C-arm marker's tracked pose at exposure


@dataclass
class CArmCalibrationResult:
    sdd_mm: float
    principal_offset_mm: tuple[float, float]
    T_marker_source_mm: np.ndarray
    width_px: int
    height_px: int
    pixel_spacing_mm: tuple[float, float]
    residual_px_rms: float  # RMS of the 2D reprojection error over all detected beads
    residual_px_per_shot: list[float]
    n_points: int
    parameter_sd: dict[str, float] = field(default_factory=dict)  # from the Jacobian and the residual

    def geometry(self, T_ref_marker_mm: np.ndarray, frame: str = "ref") -> ProjectionGeometry:
        """The projection geometry of an exposure whose C-arm marker was tracked at ``T_ref_marker_mm``."""
        T = frames.as_transform(T_ref_marker_mm, "T_ref_marker") @ self.T_marker_source_mm
        return ProjectionGeometry(self.sdd_mm, self.width_px, self.height_px, self.pixel_spacing_mm, T, frame,
                                  self.principal_offset_mm)

    def to_dict(self) -> dict:
        return {"sdd_mm": self.sdd_mm, "principal_offset_mm": list(self.principal_offset_mm),
                "T_marker_source_mm": self.T_marker_source_mm.tolist(), "width_px": self.width_px,
                "height_px": self.height_px, "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "residual_px_rms": self.residual_px_rms, "residual_px_per_shot": self.residual_px_per_shot,
                "n_points": self.n_points, "parameter_sd": self.parameter_sd}

    @classmethod
    def from_dict(cls, d: dict, where: str = "C-arm calibration") -> CArmCalibrationResult:
        """Read :meth:`to_dict`'s output; a missing or malformed entry raises ``CalibrationError`` naming it."""
        if not isinstance(d, dict):
            raise CalibrationError(f"{where}: must be an object")
        try:
            sdd = float(d["sdd_mm"])
            pp = np.asarray(d["principal_offset_mm"], dtype=np.float64)
            spacing = np.asarray(d["pixel_spacing_mm"], dtype=np.float64)
            T = frames.as_transform(d["T_marker_source_mm"], "T_marker_source_mm")
            w, h = int(d["width_px"]), int(d["height_px"])
        except KeyError as exc:
            raise CalibrationError(f"{where}: missing {exc.args[0]}") from None
        except (TypeError, ValueError, frames.FrameError) as exc:
            raise CalibrationError(f"{where}: {exc}") from None
        if not (sdd > 0 and w > 0 and h > 0 and pp.shape == (2,) and spacing.shape == (2,) and (spacing > 0).all()):
            raise CalibrationError(f"{where}: sdd_mm, image size and pixel spacing must be positive, principal_offset_mm a pair")
        return cls(sdd, (float(pp[0]), float(pp[1])), T, w, h, (float(spacing[0]), float(spacing[1])),
                   float(d.get("residual_px_rms", float("nan"))), list(d.get("residual_px_per_shot", [])),
                   int(d.get("n_points", 0)), dict(d.get("parameter_sd", {})))


def _pose(x: np.ndarray, T0: np.ndarray) -> np.ndarray:
    return T0 @ frames.make_transform(Rotation.from_rotvec(x[3:6]).as_matrix(), x[6:9])


def calibrate_carm(shots: Sequence[CArmShot], width_px: int, height_px: int, pixel_spacing_mm: tuple[float, float],
                   sdd0_mm: float, T_marker_source0_mm: np.ndarray,
                   principal_offset0_mm: tuple[float, float] = (0.0, 0.0), robust_px: float | None = None) -> CArmCalibrationResult:
    """Solve the C-arm's calibration from tracked bead shots, starting from its nominal (CAD) values.

    ``robust_px``: a soft-L1 loss with this scale, so that a few wrong bead matches (anatomy
    taken for a bead) cannot pull the solve; ``None``: plain least squares.
    """
    if len(shots) < MIN_SHOTS:
        raise CalibrationError(f"C-arm calibration needs at least {MIN_SHOTS} shots from different C-arm poses, got {len(shots)}")
    data = []
    for i, s in enumerate(shots):
        X = np.asarray(s.beads_ref_mm, dtype=np.float64).reshape(-1, 3)
        uv = np.asarray(s.beads_px, dtype=np.float64).reshape(-1, 2)
        if len(X) != len(uv):
            raise CalibrationError(f"shot {i}: {len(X)} bead positions but {len(uv)} detections (one row per bead, NaN if unseen)")
        ok = np.isfinite(uv).all(axis=1) & np.isfinite(X).all(axis=1)
        if ok.sum() < MIN_BEADS_PER_SHOT:
            raise CalibrationError(f"shot {i}: only {int(ok.sum())} beads detected; at least {MIN_BEADS_PER_SHOT} are needed")
        data.append((X[ok], uv[ok], frames.as_transform(s.T_ref_marker_mm, f"shot {i} T_ref_marker")))
    T0 = frames.as_transform(T_marker_source0_mm, "T_marker_source0")
    du, dv = pixel_spacing_mm

    def residuals(x: np.ndarray) -> np.ndarray:
        T_ms = _pose(x, T0)
        K = np.array([[x[0] / du, 0.0, width_px / 2 + x[1] / du], [0.0, x[0] / dv, height_px / 2 + x[2] / dv], [0, 0, 1.0]])
        out = []
        for X, uv, T_rm in data:
            cam = frames.transform_points(frames.invert(T_rm @ T_ms), X)
            z = np.where(cam[:, 2] > 1e-6, cam[:, 2], 1e-6)  # a bead behind the source: large residual, not a crash
            h = cam @ K.T
            out.append((h[:, :2] / z[:, None] - uv).ravel())
        return np.concatenate(out)

    x0 = np.r_[sdd0_mm, principal_offset0_mm, np.zeros(6)]
    # Scales: mm for distances, ~1 deg for angles, so the trust region treats them alike.
    extra = {"loss": "soft_l1", "f_scale": robust_px} if robust_px else {}
    res = least_squares(residuals, x0, x_scale=np.r_[10.0, 1.0, 1.0, [0.02] * 3, [5.0] * 3], method="trf", **extra)
    r = res.fun.reshape(-1, 2)
    m, n = res.fun.size, x0.size
    if not res.success or m <= n:
        raise CalibrationError(f"C-arm calibration did not converge: {res.message}")
    sigma2 = float(res.fun @ res.fun) / (m - n)
    try:
        cov = sigma2 * np.linalg.inv(res.jac.T @ res.jac)
    except np.linalg.LinAlgError as exc:
        raise CalibrationError("C-arm calibration is degenerate: the shots do not constrain every parameter "
                               "(use more C-arm poses and a phantom with depth)") from exc
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    per_shot, k = [], 0
    for X, _, _ in data:
        per_shot.append(float(np.sqrt(np.mean(np.sum(r[k:k + len(X)] ** 2, axis=1)))))
        k += len(X)
    rms = float(np.sqrt(np.mean(np.sum(r**2, axis=1))))
    return CArmCalibrationResult(
        sdd_mm=float(res.x[0]), principal_offset_mm=(float(res.x[1]), float(res.x[2])), T_marker_source_mm=_pose(res.x, T0),
        width_px=int(width_px), height_px=int(height_px), pixel_spacing_mm=(float(du), float(dv)), residual_px_rms=rms,
        residual_px_per_shot=per_shot, n_points=len(r),
        parameter_sd={"sdd_mm": float(sd[0]), "principal_x_mm": float(sd[1]), "principal_y_mm": float(sd[2]),
                      "rotation_deg": float(np.degrees(np.linalg.norm(sd[3:6]))), "translation_mm": float(np.linalg.norm(sd[6:9]))},
    )
