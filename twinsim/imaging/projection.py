"""Pinhole projection of a calibrated C-arm: intrinsics, extrinsics, 3x4 projection matrix.

Conventions (the same as nanodrr's renderer, so the DRR and the matrices cannot disagree):

- The camera frame is the ``source`` frame: origin at the focal spot, z towards the
  detector, x along image columns (u), y along image rows (v). Millimetres.
- Pixel coordinates have their origin at the outer corner of the first pixel, so the centre
  of pixel (row i, column j) is at (u, v) = (j + 0.5, i + 0.5).
- ``K = [[sdd/du, 0, cu], [0, sdd/dv, cv], [0, 0, 1]]`` with the principal point
  ``(cu, cv) = (W/2 + x0/du, H/2 + y0/dv)``.
- ``P = K @ T_source_<frame>[:3]`` maps homogeneous points of ``frame`` (mm) to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from twinsim import frames
from twinsim.errors import TwinsimError


class GeometryError(TwinsimError, ValueError):
    """A projection geometry is impossible or inconsistent."""


@dataclass(frozen=True)
class ProjectionGeometry:
    sdd_mm: float
    width_px: int
    height_px: int
    pixel_spacing_mm: tuple[float, float]  # (du along u, dv along v)
    T_frame_source_mm: np.ndarray  # pose of the focal spot in `frame`
    frame: str = "ct"
    principal_offset_mm: tuple[float, float] = (0.0, 0.0)  # principal point minus detector centre

    def __post_init__(self) -> None:
        if self.sdd_mm <= 0 or self.width_px <= 0 or self.height_px <= 0 or min(self.pixel_spacing_mm) <= 0:
            raise GeometryError("source-detector distance, image size and pixel spacing must be positive")
        try:
            frames.as_transform(self.T_frame_source_mm, f"T_{self.frame}_source")
        except frames.FrameError as exc:
            raise GeometryError(str(exc)) from exc

    @property
    def K(self) -> np.ndarray:
        du, dv = self.pixel_spacing_mm
        x0, y0 = self.principal_offset_mm
        return np.array([
            [self.sdd_mm / du, 0.0, self.width_px / 2 + x0 / du],
            [0.0, self.sdd_mm / dv, self.height_px / 2 + y0 / dv],
            [0.0, 0.0, 1.0],
        ])

    @property
    def T_source_frame_mm(self) -> np.ndarray:
        """Extrinsics: ``frame`` -> source (camera) coordinates."""
        return frames.invert(self.T_frame_source_mm)

    @property
    def P(self) -> np.ndarray:
        """3x4 projection matrix, ``frame`` mm -> pixels (homogeneous)."""
        return self.K @ self.T_source_frame_mm[:3]

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) points of ``frame`` -> (N, 2) pixel coordinates (u, v)."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        h = np.c_[p, np.ones(len(p))] @ self.P.T
        if np.any(h[:, 2] <= 0):
            raise GeometryError("a point lies behind the X-ray source; it has no projection")
        return h[:, :2] / h[:, 2:3]

    def px_per_mm_at(self, point_mm: np.ndarray) -> float:
        """Image pixels per mm of anatomy at ``point_mm`` (perspective magnification over the mean pixel size)."""
        depth = float((self.T_source_frame_mm @ np.append(np.asarray(point_mm, dtype=np.float64), 1.0))[2])
        if depth <= 0:
            raise GeometryError("a point lies behind the X-ray source; it has no magnification")
        return float(self.sdd_mm / depth / np.mean(self.pixel_spacing_mm))

    @property
    def source_mm(self) -> np.ndarray:
        return self.T_frame_source_mm[:3, 3].copy()

    def detector_points_mm(self, uv_px: np.ndarray) -> np.ndarray:
        """Where pixel coordinates (N, 2) lie on the detector plane, in ``frame`` mm."""
        uv = np.asarray(uv_px, dtype=np.float64).reshape(-1, 2)
        rays = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(self.K).T  # z = 1 in the camera frame
        return frames.transform_points(self.T_frame_source_mm, rays * self.sdd_mm)

    @property
    def detector_center_mm(self) -> np.ndarray:
        return self.detector_points_mm(np.array([[self.width_px / 2, self.height_px / 2]]))[0]

    @property
    def beam_direction(self) -> np.ndarray:
        """Unit vector from the source towards the detector, in ``frame``."""
        return self.T_frame_source_mm[:3, 2].copy()

    def in_frame(self, T_new_frame_mm: np.ndarray, new_frame: str) -> ProjectionGeometry:
        """The same acquisition expressed in another frame (``T_<new>_<frame>``, mm)."""
        return replace(self, T_frame_source_mm=T_new_frame_mm @ self.T_frame_source_mm, frame=new_frame)

    def rows(self, r0: int, r1: int) -> ProjectionGeometry:
        """The band of image rows [r0, r1) as its own geometry (for rendering in chunks)."""
        dv = self.pixel_spacing_mm[1]
        shift_mm = -r0 * dv + (self.height_px - (r1 - r0)) / 2 * dv
        x0, y0 = self.principal_offset_mm
        return replace(self, height_px=r1 - r0, principal_offset_mm=(x0, y0 + shift_mm))
