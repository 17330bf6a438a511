"""The twin's model of the operation robot: the nominal (datasheet) Panda kinematics.

A real controller reports its flange pose from nominal kinematics too (libfranka's
``O_T_EE``); the arm as built differs from it, which is what calibration and closed-loop
correction are for. The model runs in its own PyBullet client, robot base at the origin.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb

from twinsim.robot import panda
from twinsim.robot.kinematics import arm_indices, link_pose_m, set_joints, solve_ik
from twinsim.robot.tools import NeedleGuideConfig, TrackerCameraConfig


class NominalPanda:
    def __init__(self, tool: NeedleGuideConfig | TrackerCameraConfig) -> None:
        self.client = pb.connect(pb.DIRECT)
        urdf = panda.panda_urdf(tool)
        self.body = pb.loadURDF(str(urdf), useFixedBase=True, physicsClientId=self.client)
        self.link_index, self.joints = arm_indices(self.client, self.body, panda.ARM_JOINTS)

    def fk_m(self, q_rad: np.ndarray, link: str = panda.FLANGE_LINK) -> np.ndarray:
        """``T_base_link`` (metres) at joint positions ``q_rad``."""
        set_joints(self.client, self.body, self.joints, np.asarray(q_rad, dtype=np.float64))
        return link_pose_m(self.client, self.body, self.link_index[link])

    def ik(self, T_base_link_m: np.ndarray, q0_rad: np.ndarray, link: str = panda.FLANGE_LINK) -> np.ndarray:
        """Joint positions putting ``link`` at ``T_base_link_m``, solved from ``q0_rad``."""
        return solve_ik(self.client, self.body, self.joints, self.link_index[link], T_base_link_m, q0_rad,
                        panda.SOFT_LIMITS_RAD)

    def close(self) -> None:
        if pb.isConnected(self.client):
            pb.disconnect(self.client)

    def __enter__(self) -> NominalPanda:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
