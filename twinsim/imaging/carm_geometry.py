"""C-arm geometry: where the source and detector are for given angles, in the world frame.

Frames (world lengths in metres):

- ``carm``: origin at the isocenter; z points from the source to the detector (the beam);
  x is the detector's image-column direction (u), y the image-row direction (v).
  At LAO = cranial = 0 the beam runs anterior to posterior, x points to the patient's left
  and y to the feet, so the image reads like a standard AP radiograph (head up, patient's
  left on the right).
- ``source``: the focal spot, axes parallel to ``carm``.
- ``detector``: the detector centre, axes parallel to ``carm``.

Angles: LAO positive turns the detector towards the patient's left (RAO is negative LAO),
about the patient's superior axis through the isocenter; cranial positive tilts the detector
towards the head, about the patient's left axis. Cranial/caudal is applied first, in the
patient's frame, then LAO/RAO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinsim import frames


@dataclass(frozen=True)
class CArmGeometry:
    sdd_mm: float = 1020.0  # source to detector
    sid_mm: float = 620.0  # source to isocenter
    detector_size_mm: tuple[float, float] = (300.0, 300.0)  # (width u, height v)
    pixel_spacing_mm: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.sid_mm < self.sdd_mm:
            raise ValueError(f"C-arm needs 0 < source-isocenter ({self.sid_mm} mm) < source-detector ({self.sdd_mm} mm)")
        if min(self.detector_size_mm) <= 0 or self.pixel_spacing_mm <= 0:
            raise ValueError("C-arm detector size and pixel spacing must be positive")

    def pixel_spacing_for(self, size_px: tuple[int, int]) -> tuple[float, float]:
        """Pixel spacing when the full detector is read out at ``(width, height)`` pixels."""
        return (self.detector_size_mm[0] / size_px[0], self.detector_size_mm[1] / size_px[1])

    @property
    def T_carm_source(self) -> np.ndarray:
        """Source pose in the carm frame, metres."""
        return frames.make_transform(t=[0.0, 0.0, -self.sid_mm * 1e-3])

    @property
    def T_carm_detector(self) -> np.ndarray:
        """Detector-centre pose in the carm frame, metres."""
        return frames.make_transform(t=[0.0, 0.0, (self.sdd_mm - self.sid_mm) * 1e-3])


@dataclass(frozen=True)
class PatientAxes:
    """The patient's anatomical directions as unit vectors in the world frame."""

    left: np.ndarray
    posterior: np.ndarray
    superior: np.ndarray

    @classmethod
    def from_T_world_ct(cls, T_world_ct: np.ndarray) -> PatientAxes:
        """The ``ct`` frame is RAS, so left = -x, posterior = -y, superior = +z in it."""
        R = T_world_ct[:3, :3]
        return cls(left=R @ [-1.0, 0.0, 0.0], posterior=R @ [0.0, -1.0, 0.0], superior=R @ [0.0, 0.0, 1.0])


def carm_pose(
    isocenter_world_m: np.ndarray,
    axes: PatientAxes,
    lao_deg: float = 0.0,
    cranial_deg: float = 0.0,
) -> np.ndarray:
    """``T_world_carm`` for the given angles around an isocenter (world, metres)."""
    z = axes.posterior
    x = axes.left
    R0 = np.column_stack([x, np.cross(z, x), z])
    R_cran = frames.rotation_about_axis(axes.left, np.deg2rad(cranial_deg))
    R_lao = frames.rotation_about_axis(axes.superior, -np.deg2rad(lao_deg))
    return frames.make_transform(R_lao @ R_cran @ R0, isocenter_world_m)
