"""What people physically do with tools during calibration and registration, in the simulated room.

These functions move ground-truth poses (a pointer in a hand, a tip held in a divot); they
return only what the sensors see: tracker frames and the robot's joint readings. The twin's
calibration code receives those, never the poses set here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.robot import panda
from twinsim.robot.kinematics import IKError, solve_ik
from twinsim.sim.robot_driver import SimulatedArm
from twinsim.tracking.calibration import pivot_motion
from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega


def tool(vega: SimulatedVega, name: str) -> SimulatedTool:
    for t in vega.tools:
        if t.marker.name == name:
            return t
    raise KeyError(f"the tracker has no tool {name!r}; tools: {[t.marker.name for t in vega.tools]}")


SETTLE_FRAMES = 3  # 50 ms at 60 Hz: longer than the tracker's latency, so no frame predates a move


def read_frames(vega: SimulatedVega, n: int, settle: int = SETTLE_FRAMES) -> list[tuple]:
    """``n`` tracker frames (as ``get_frame()`` returns them) after discarding ``settle`` frames."""
    for _ in range(settle):
        vega.get_frame()
    return [vega.get_frame() for _ in range(n)]


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


def pointer_pivot(vega: SimulatedVega, T_world_divot_m: np.ndarray, tip_mm: np.ndarray, n: int = 120,
                  seed: int = 0) -> np.ndarray:
    """A person pivots the pointer in a divot; returns its tracked poses ``T_cam_pointer`` (N, 4, 4) mm."""
    t = tool(vega, "pointer")
    out = []
    for T in pivot_motion(T_world_divot_m, tip_mm, n, max_tilt_deg=25.0, seed=seed):
        previous = hold(t, T)
        out.append(read_frames(vega, 1)[0][3][vega.tools.index(t)])
        t.T_world_tool_m = previous
    return np.array(out)


def pointer_touch(vega: SimulatedVega, points_world_m: np.ndarray, tip_mm: np.ndarray, n_frames: int = 10,
                  tilt_deg: float = 10.0, seed: int = 0) -> list[list[tuple]]:
    """A person touches each point with the pointer and holds still for ``n_frames``; the frames of each."""
    t = tool(vega, "pointer")
    rng = np.random.default_rng(seed)
    out = []
    for p in np.atleast_2d(points_world_m):
        T = pointer_pose_touching(p, tip_mm, vega.T_world_cam_m(), tilt_deg, rng)
        previous = hold(t, T)
        out.append(read_frames(vega, n_frames))
        t.T_world_tool_m = previous
    return out


def tip_pivot(arm: SimulatedArm, n: int = 30, max_tilt_deg: float = 15.0, seed: int = 0,
              vega: SimulatedVega | None = None, n_frames: int = 5) -> tuple[np.ndarray, list[list[tuple]]]:
    """The operation robot, hand-guided with its tool tip in a divot, tilts about the tip.

    The divot is where the tip is at the start. Poses come from the arm as built (its real
    kinematics), as the divot constrains the real tip. Returns the joint readings (N, 7) and,
    with a tracker, ``n_frames`` tracker frames per pose.
    """
    room, name = arm.room, arm.name
    h = room.robots[name]
    link = h.link_index[panda.TOOL_TIP_LINK]
    T0 = room.link_pose(name, panda.TOOL_TIP_LINK)
    rng = np.random.default_rng(seed)
    q = room.joint_positions(name)
    q_start = q.copy()
    readings, tracked = [], []
    for _ in range(n):
        tilt = Rotation.from_rotvec(np.r_[rng.uniform(-1, 1, 2) * np.deg2rad(max_tilt_deg), rng.uniform(-0.3, 0.3)])
        target = frames.make_transform(T0[:3, :3] @ tilt.as_matrix(), T0[:3, 3])
        try:
            q = solve_ik(room.client, h.body, h.joint_indices, link, target, q, panda.SOFT_LIMITS_RAD)
        except IKError:
            continue
        room.set_joint_positions(name, q)
        readings.append(arm.read_joints_rad())
        if vega is not None:
            tracked.append(read_frames(vega, n_frames))
    room.set_joint_positions(name, q_start)
    return np.array(readings), tracked
