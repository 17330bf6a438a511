"""The room's datasheet parts, as the twin models them: shapes and sizes, never where things truly stand.

Where each part stands comes from sensors (the tracker, joint readings, the calibration, the
pointer); what it looks like comes from here. A rig builds it from its scene file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twinsim.robot.tools import NeedleGuideConfig, TrackerCameraConfig


@dataclass
class RoomModel:
    needle_guide: NeedleGuideConfig
    tracker_camera: TrackerCameraConfig
    carm_boxes_m: list[tuple[np.ndarray, np.ndarray]]  # (size, T_carm_box) in the C-arm's frame, metres
    T_carm_source_m: np.ndarray  # the focal spot in the C-arm's body frame (datasheet SID)
    table_top_height_m: float  # floor to the top surface
    table_width_m: float
    table_length_m: float
    cart_size_m: dict[str, np.ndarray] = field(default_factory=dict)  # robot name -> cart footprint (x, y)
    base_height_m: dict[str, float] = field(default_factory=dict)  # robot name -> its base above the floor (the cart's height)
