"""What the environments observe: built from the tracker's frames, the joint readings and the clinician's clicks only.

Kept apart from the environments (which also read the simulation's truth, for rewards) so the
import contract "Nothing on the twin's side reads ground truth" can hold this module and the
scripted policies to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.tracking.tools import NEEDLE_MARKER, REFERENCE
from twinsim.twin.tracker_view import ToolIndex, TrackingLost

SETTLE_FRAMES = 2  # a tracker reports with latency: no averaged frame may predate the motion
GUIDE_OBS_SIZE = 14


def guide_observation(tracker: Any, tools: ToolIndex, q_rad: np.ndarray, calibration: Any, T_ref_goal_mm: np.ndarray,
                      n_frames: int, last: np.ndarray) -> tuple[np.ndarray, bool]:
    """``[tip (3, mm), axis (3), joints (7, rad), tracked (1)]`` with tip and axis in the goal's frame.

    When the guide or the reference is not tracked, the last tip and axis are kept and the flag is 0.
    """
    for _ in range(SETTLE_FRAMES):
        tracker.get_frame()
    f = [tracker.get_frame() for _ in range(n_frames)]
    T_goal_ref = frames.invert(T_ref_goal_mm)
    try:
        T_ref_marker = tools.pose_in(f, NEEDLE_MARKER, REFERENCE)
    except TrackingLost:
        obs = last.copy()
        obs[6:13], obs[13] = q_rad, 0.0
        return obs, False
    tip = frames.transform_points(T_goal_ref @ T_ref_marker, calibration.needle_tip_mm)
    axis = T_goal_ref[:3, :3] @ T_ref_marker[:3, :3] @ calibration.needle_axis
    return np.r_[np.clip(tip, -1000, 1000), axis / np.linalg.norm(axis), q_rad, 1.0].astype(np.float32), True


def guide_errors(obs: np.ndarray) -> tuple[float, float]:
    """Tracked tip distance (mm) and axis angle (deg) to the goal, from a guide observation."""
    return float(np.linalg.norm(obs[:3])), frames.angle_between_deg(np.asarray(obs[3:6], float), np.array([0.0, 0.0, 1.0]))


def view_observation(first_lao_deg: float, first_cranial_deg: float, clicks: dict[str, np.ndarray], width_px: int,
                     height_px: int, names: Sequence[str]) -> np.ndarray:
    """``[LAO / 90, cranial / 30, (u / width, v / height) per landmark (-1 where not marked)]``."""
    uv = [np.asarray(clicks[n], float) / [width_px, height_px] if n in clicks else np.array([-1.0, -1.0]) for n in names]
    return np.clip(np.r_[first_lao_deg / 90.0, first_cranial_deg / 30.0, np.concatenate(uv)], -1.0, 1.0).astype(np.float32)
