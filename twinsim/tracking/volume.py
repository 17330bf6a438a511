"""What an NDI Vega sees, from its datasheet: its measurement volume, frame rate and how many of a tool's spheres
it needs. The simulated Vega and the twin's line-of-sight check both use it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_RATE_HZ = 60.0
MIN_VISIBLE_SPHERES = 3  # a tool is tracked when at least this many of its spheres are seen


@dataclass(frozen=True)
class MeasurementVolume:
    """Pyramid in front of the camera (camera frame, z along the view), millimetres."""

    near_mm: float = 950.0
    far_mm: float = 2400.0
    half_angle_x_deg: float = 18.1  # ~1566 mm wide at 2.4 m
    half_angle_y_deg: float = 15.3  # ~1312 mm high at 2.4 m

    def contains(self, p_cam_mm: np.ndarray) -> np.ndarray:
        x, y, z = np.asarray(p_cam_mm).T
        return ((z >= self.near_mm) & (z <= self.far_mm)
                & (np.abs(x) <= z * np.tan(np.deg2rad(self.half_angle_x_deg)))
                & (np.abs(y) <= z * np.tan(np.deg2rad(self.half_angle_y_deg))))
