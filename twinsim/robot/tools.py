"""The tools on the Panda's flange and the arm's departures from its datasheet, as a scene sets them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KinematicErrorConfig:
    """How far the simulated "real" arm departs from its nominal (datasheet) kinematics.

    Each joint origin of the URDF is shifted and tilted by seeded Gaussian errors, each joint
    encoder reads with a constant zero offset, and every move lands with a small random joint
    error sized to the repeatability. All zero: the arm is its nominal model.
    """

    seed: int = 0
    link_offset_sd_mm: float = 0.0  # per axis, on every joint origin
    link_angle_sd_deg: float = 0.0  # per axis, on every joint origin
    joint_zero_sd_deg: float = 0.0  # encoder zero offset per joint
    repeatability_mm: float = 0.0  # ISO 9283 style: radius holding ~99 % of repeated arrivals

    @property
    def is_nominal(self) -> bool:
        return not (self.link_offset_sd_mm or self.link_angle_sd_deg or self.joint_zero_sd_deg or self.repeatability_mm)


@dataclass
class NeedleGuideConfig:
    adapter_length_m: float
    adapter_diameter_m: float
    tube_length_m: float
    tube_outer_diameter_m: float
    channel_diameter_m: float
    mass_kg: float


@dataclass
class TrackerCameraConfig:
    model: str
    size_m: np.ndarray  # x (long side), y, z (depth along the viewing direction)
    mount_offset_m: float  # flange to camera back face along the flange z axis
    mass_kg: float
