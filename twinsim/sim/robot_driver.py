"""The simulated operation robot as its controller presents it: joint readings and joint moves.

This is the arm as built: the room's URDF carries perturbed joint origins, and here each
encoder reads with a constant zero offset and each move lands with a small random joint
error sized to the arm's repeatability. The interface is what a real driver (franky) gives:
no access to where the arm truly is.
"""

from __future__ import annotations

import numpy as np

from twinsim.robot import panda
from twinsim.sim.world import OperatingRoom

# Joint noise per unit repeatability: a Panda tool ~0.8 m from the shoulder sees joint errors
# through lever arms of 0.1-0.8 m; 99 % of arrivals then fall within the repeatability radius
# (measured with tests/test_robot_sync.py's repeatability test).
_LEVER_M = 0.5


class SimulatedArm:
    def __init__(self, room: OperatingRoom, name: str = "operation") -> None:
        self.room, self.name = room, name
        errors = room.robots[name].config.kinematic_errors
        rng = np.random.default_rng(errors.seed + 1)
        self.zero_offset_rad = rng.normal(0.0, np.deg2rad(errors.joint_zero_sd_deg), 7)
        self.joint_noise_sd_rad = errors.repeatability_mm * 1e-3 / 3.37 / _LEVER_M
        self._rng = np.random.default_rng(errors.seed + 2)

    def read_joints_rad(self) -> np.ndarray:
        """Encoder readings (what the controller reports)."""
        return self.room.joint_positions(self.name) - self.zero_offset_rad

    def move_joints(self, q_rad: np.ndarray, speed_factor: float = 1.0, asynchronous: bool = False) -> np.ndarray:
        """Arrive at commanded joint positions at once (checked against the soft limits); returns the readings.

        No motion in between: for the twin's own tests and benches. The HAL's
        :class:`twinsim.hal.sim.arm.SimArm` moves over time and stops at contacts.
        """
        q = panda.check_joint_positions(q_rad, f"{self.name} robot command")
        physical = q + self.zero_offset_rad + self._rng.normal(0.0, self.joint_noise_sd_rad, 7)
        self.room.set_joint_positions(self.name, np.clip(physical, panda.SOFT_LIMITS_RAD[:, 0], panda.SOFT_LIMITS_RAD[:, 1]))
        return self.read_joints_rad()

    def recover(self) -> None:
        """Nothing to clear: an instant move has no reflexes."""
