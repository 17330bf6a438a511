"""What people physically do with tools during calibration and registration, in the simulated room.

These helpers set ground-truth poses (a pointer in a hand, touching a point); the simulated
operator (:mod:`twinsim.hal.sim.operator`) uses them, and the workflows only see what the
sensors report: tracker frames and the robot's joint readings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.tracking.markers import fit_marker
from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega


def tool(vega: SimulatedVega, name: str) -> SimulatedTool:
    for t in vega.tools:
        if t.marker.name == name:
            return t
    raise KeyError(f"the tracker has no tool {name!r}; tools: {[t.marker.name for t in vega.tools]}")


def measured_pose_m(t: SimulatedTool) -> np.ndarray:
    """Where an error-free tracker puts the tool: its definition fitted to its spheres as built.

    Spheres off their definition (manufacturing tolerance) make this a fixed rigid offset from
    the definition's frame; it is the frame everything measured through the tool lives in.
    """
    T_def_fit, _ = fit_marker(t.marker.spheres_mm, t.true_spheres_mm)
    return t.T_world_tool_m() @ frames.scale_translation(T_def_fit, 1e-3)


def hold(t: SimulatedTool, T_world_tool_m: np.ndarray) -> Callable[[], np.ndarray]:
    previous = t.T_world_tool_m
    t.T_world_tool_m = lambda: T_world_tool_m
    return previous


def pointer_pose_touching(p_world_m: np.ndarray, tip_mm: np.ndarray, T_world_cam_m: np.ndarray,
                          tilt_deg: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pointer pose with its tip at ``p_world_m``, marker face towards the camera, shaft roughly down."""
    cam = T_world_cam_m[:3, 3]
    tip_m = np.asarray(tip_mm) * 1e-3
    R = np.eye(3)
    for _ in range(3):  # the marker's position depends on R; a few passes settle it
        origin = p_world_m - R @ tip_m
        z = cam - origin
        z /= np.linalg.norm(z)
        y = np.array([0.0, 0.0, 1.0]) - z[2] * z  # marker "up" = world up, so the shaft (-y) points down
        y /= np.linalg.norm(y)
        R = np.column_stack([np.cross(y, z), y, z])
    if rng is not None and tilt_deg:
        R = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(tilt_deg)).as_matrix() @ R
    return frames.make_transform(R, p_world_m - R @ tip_m)


