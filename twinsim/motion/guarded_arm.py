"""The operation robot behind the twin's check: no command reaches the driver unless its path passed.

Wraps any HAL ``Arm``. Each joint move or path is checked densely in the twin from the arm's
present joint reading; a refusal raises :class:`MotionRefused` and the driver sees nothing.
Every command sent and every one refused is logged, so a bench can count motions executed
without a passed check (by construction, none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinsim.hal.interfaces import DEFAULT_SPEED_FACTOR, Arm
from twinsim.motion.planner import MotionRefused
from twinsim.motion.twin_world import TwinWorld


@dataclass
class MotionLog:
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unchecked(self) -> int:
        return sum(1 for m in self.sent if not m["check_passed"])


class GuardedArm:
    def __init__(self, arm: Arm, world: TwinWorld, log: MotionLog | None = None) -> None:
        self.arm, self.world = arm, world
        self.log = log or MotionLog()
        self.name = arm.name

    def _checked(self, waypoints_rad: Sequence[np.ndarray], what: str) -> None:
        path = [self.arm.read_joints_rad(), *[np.asarray(q, dtype=np.float64) for q in waypoints_rad]]
        check = self.world.check_path(path)
        entry = {"what": what, "waypoints": len(waypoints_rad), "configurations_checked": check.configurations,
                 "check_s": check.seconds, "check_passed": check.ok}
        if not check.ok:
            self.log.refused.append({**entry, "why": check.describe()})
            raise MotionRefused(what, check.describe(), check)
        self.log.sent.append(entry)

    def move_joints(self, q_rad: np.ndarray, speed_factor: float = DEFAULT_SPEED_FACTOR, asynchronous: bool = False) -> None:
        self._checked([q_rad], "joint move")
        self.arm.move_joints(q_rad, speed_factor, asynchronous)

    def follow_joint_path(self, waypoints_rad: Sequence[np.ndarray] | np.ndarray, speed_factor: float = DEFAULT_SPEED_FACTOR,
                          asynchronous: bool = False) -> None:
        waypoints = [np.asarray(q, dtype=np.float64) for q in waypoints_rad]
        self._checked(waypoints, "joint path")
        self.arm.follow_joint_path(waypoints, speed_factor, asynchronous)

    def read_joints_rad(self) -> np.ndarray:
        return self.arm.read_joints_rad()

    def flange_pose_m(self) -> np.ndarray:
        return self.arm.flange_pose_m()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self.arm.wait(timeout_s)

    def is_moving(self) -> bool:
        return self.arm.is_moving()

    def stop(self) -> None:
        self.arm.stop()

    def has_error(self) -> bool:
        return self.arm.has_error()

    def recover(self) -> None:
        self.arm.recover()

    def close(self) -> None:
        self.arm.close()
