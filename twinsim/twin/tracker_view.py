"""The twin's view of the tracker: averaged tool poses from ``get_frame()`` output, by tool name.

Works on what scikit-surgerynditracker's ``NDITracker.get_frame()`` returns, so it reads a
real tracker's frames unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.hal.errors import ToolMissing
from twinsim.hal.interfaces import Tracker

MIN_TRACKED_FRACTION = 0.5  # of the frames averaged; fewer and the tool counts as lost


class TrackingLost(ToolMissing):
    """A tool the twin needs is not tracked (occluded, outside the volume, or tracker dropout)."""

    def __init__(self, message: str, device: str = "tracker") -> None:
        super().__init__(device, message)


def tool_poses(frame_list: Sequence[tuple], handle: int) -> np.ndarray:
    """(N, 4, 4) poses of one port handle over frames (NaN rows where it was missing)."""
    out = []
    for f in frame_list:
        handles = list(f[0])
        if handle not in handles:
            raise TrackingLost(f"port handle {handle} is not in the tracker's frame (handles {handles})")
        out.append(np.asarray(f[3][handles.index(handle)], dtype=np.float64))
    return np.array(out)


def mean_pose(poses_mm: np.ndarray, what: str = "tool") -> np.ndarray:
    """Average of the tracked (finite) poses: rotation mean and mean translation."""
    P = np.asarray(poses_mm, dtype=np.float64)
    ok = np.isfinite(P[:, :3, :]).all(axis=(1, 2))
    if ok.sum() == 0 or ok.mean() < MIN_TRACKED_FRACTION:
        raise TrackingLost(f"{what} is not tracked (seen in {int(ok.sum())} of {len(P)} frames): occluded, outside "
                           "the measurement volume, or a tracker dropout")
    P = P[ok]
    return frames.make_transform(Rotation.from_matrix(P[:, :3, :3]).mean().as_matrix(), P[:, :3, 3].mean(0))


class ToolIndex:
    """Port handle by tool name, from the tracker's tool descriptions."""

    def __init__(self, tracker: Tracker) -> None:
        handles, names = tracker.get_tool_descriptions()
        self.handle = {str(n): int(h) for h, n in zip(handles, names, strict=True)}

    def _handle(self, name: str) -> int:
        if name not in self.handle:
            raise TrackingLost(f"the tracker has no tool {name!r}; it tracks {sorted(self.handle)}")
        return self.handle[name]

    def pose(self, frame_list: Sequence[tuple], name: str) -> np.ndarray:
        return mean_pose(tool_poses(frame_list, self._handle(name)), name)

    def pose_in(self, frame_list: Sequence[tuple], name: str, fixed: str) -> np.ndarray:
        """``T_fixed_name`` averaged over frames, each frame's pose taken relative to ``fixed`` first."""
        a = tool_poses(frame_list, self._handle(name))
        b = tool_poses(frame_list, self._handle(fixed))
        rel = np.array([frames.invert(B) @ A if np.isfinite(A[:3]).all() and np.isfinite(B[:3]).all()
                        else np.full((4, 4), np.nan) for A, B in zip(a, b, strict=True)])
        return mean_pose(rel, f"{name} relative to {fixed}")
