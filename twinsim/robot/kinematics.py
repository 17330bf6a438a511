"""Forward and inverse kinematics of a PyBullet arm (metres, radians).

Used both by the twin's nominal model (its own PyBullet client) and by simulation code that
needs the "real" arm to reach a physical constraint, such as a tool tip held in a divot.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.errors import TwinsimError


class IKError(TwinsimError, ValueError):
    """The target pose cannot be reached within the joint limits."""


def arm_indices(client: int, body: int, arm_joints: tuple[str, ...]) -> tuple[dict[str, int], list[int]]:
    """(link name -> index, indices of the named arm joints in order) of a loaded body."""
    link_index, joints = {}, []
    for j in range(pb.getNumJoints(body, physicsClientId=client)):
        info = pb.getJointInfo(body, j, physicsClientId=client)
        link_index[info[12].decode()] = j
        if info[1].decode() in arm_joints:
            joints.append(j)
    return link_index, joints


def set_joints(client: int, body: int, joints: list[int], q_rad: np.ndarray) -> None:
    for j, qi in zip(joints, q_rad, strict=True):
        pb.resetJointState(body, j, float(qi), physicsClientId=client)


def link_pose_m(client: int, body: int, link: int) -> np.ndarray:
    s = pb.getLinkState(body, link, computeForwardKinematics=True, physicsClientId=client)
    return frames.pose_to_transform(s[4], s[5])


def _jacobian(client: int, body: int, link: int, q_rad: np.ndarray) -> np.ndarray:
    s = pb.getLinkState(body, link, computeForwardKinematics=True, physicsClientId=client)
    # PyBullet's Jacobian point is given in the link's inertial frame, not the URDF link frame.
    R_com = frames.quat_xyzw_to_matrix(s[1])
    local = R_com.T @ (np.asarray(s[4]) - np.asarray(s[0]))
    zeros = [0.0] * len(q_rad)
    jt, jr = pb.calculateJacobian(body, link, local.tolist(), q_rad.tolist(), zeros, zeros, physicsClientId=client)
    # For a fixed base PyBullet gives the Jacobian in the base's frame; the pose error is in the world's.
    _, q_com = pb.getBasePositionAndOrientation(body, physicsClientId=client)
    q_local = pb.getDynamicsInfo(body, -1, physicsClientId=client)[4]
    R_base = frames.quat_xyzw_to_matrix(q_com) @ frames.quat_xyzw_to_matrix(q_local).T
    return np.vstack([R_base @ np.asarray(jt), R_base @ np.asarray(jr)])


def pose_error(T_target: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position error m, rotation error as a world-frame rotation vector rad) from T to T_target."""
    return T_target[:3, 3] - T[:3, 3], Rotation.from_matrix(T_target[:3, :3] @ T[:3, :3].T).as_rotvec()


def solve_ik(client: int, body: int, joints: list[int], link: int, T_target_m: np.ndarray, q0_rad: np.ndarray,
             limits_rad: np.ndarray, tol_m: float = 1e-7, tol_rad: float = 1e-6, max_iter: int = 200,
             damping: float = 1e-4) -> np.ndarray:
    """Damped least squares IK from ``q0_rad`` to a full pose of ``link``; leaves the arm at the solution.

    Raises IKError when the pose is not reached within the soft limits.
    """
    q = np.clip(np.asarray(q0_rad, dtype=np.float64), limits_rad[:, 0], limits_rad[:, 1])
    e_p = e_r = np.full(3, np.inf)
    for _ in range(max_iter):
        set_joints(client, body, joints, q)
        e_p, e_r = pose_error(T_target_m, link_pose_m(client, body, link))
        if np.linalg.norm(e_p) < tol_m and np.linalg.norm(e_r) < tol_rad:
            return q
        J = _jacobian(client, body, link, q)
        e = np.r_[e_p, e_r]
        dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), e)
        step = np.max(np.abs(dq))
        if step > 0.2:  # keep far-off steps inside the linear region
            dq *= 0.2 / step
        q = np.clip(q + dq, limits_rad[:, 0], limits_rad[:, 1])
    raise IKError(f"pose not reached within the joint limits: {np.linalg.norm(e_p) * 1000:.2f} mm, "
                  f"{np.degrees(np.linalg.norm(e_r)):.3f} deg away after {max_iter} iterations")
