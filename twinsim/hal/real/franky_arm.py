"""A Franka arm through ``franky-control`` (libfranka's protocol) behind the HAL ``Arm``.

Runs unchanged against a real FR3/Panda or against ``franky-sim``. franky's exceptions are
translated into the HAL's: network and protocol failures are "connection lost", a reflex or
a stop ends a motion with "motion aborted", limit violations are "limit violation".
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from twinsim.hal.errors import ConnectionLost, HalError, LimitViolation, MotionAborted
from twinsim.hal.interfaces import DEFAULT_SPEED_FACTOR

T = TypeVar("T")


def translate_franky_error(device: str, exc: BaseException) -> HalError:
    """The HAL error for a franky (or libfranka) exception."""
    import franky

    msg = str(exc)
    low = msg.lower()
    if isinstance(exc, franky.NetworkException | franky.ProtocolException | franky.IncompatibleVersionException) or (
            isinstance(exc, RuntimeError) and "net" in low):
        return ConnectionLost(device, f"connection lost: {msg}")
    if isinstance(exc, franky.ControlException | franky.CommandException):
        if "preempted" in low:
            return MotionAborted(device, f"motion aborted (stopped): {msg}")
        if "limit" in low or "violation" in low:
            return LimitViolation(device, f"limit violation: {msg}")
        if "reflex" in low:
            return MotionAborted(device, f"motion aborted (collision reflex): {msg}")
        return MotionAborted(device, f"motion aborted: {msg}")
    if isinstance(exc, ValueError | TypeError):
        return LimitViolation(device, f"command rejected: {msg}")
    return HalError(device, msg)


FCI_COMMAND_PORT = 1337  # libfranka's TCP command port on the robot's control box


class FrankyArm:
    def __init__(self, hostname: str, name: str = "operation", realtime: bool = True, connect_timeout_s: float = 3.0) -> None:
        import franky

        self.name, self.hostname = name, hostname
        # libfranka waits about a minute on an unreachable address; a plain TCP connect says so in seconds.
        try:
            socket.create_connection((hostname, FCI_COMMAND_PORT), timeout=connect_timeout_s).close()
        except OSError as exc:
            raise ConnectionLost(name, f"cannot connect to the robot at {hostname}: nothing answers on its FCI port "
                                       f"{FCI_COMMAND_PORT} within {connect_timeout_s:g} s ({exc}); check the address, the "
                                       "network and that FCI is activated in Desk") from exc
        self._franky = franky
        config = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
        try:
            self.robot = franky.Robot(hostname, realtime_config=config)
        except Exception as exc:  # noqa: BLE001 (franky raises its own classes and RuntimeError)
            raise ConnectionLost(name, f"cannot connect to the robot at {hostname}: {exc}") from exc

    def _call(self, f: Callable[[], T]) -> T:
        try:
            return f()
        except HalError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate_franky_error(self.name, exc) from exc

    def read_joints_rad(self) -> np.ndarray:
        return np.array(self._call(lambda: self.robot.current_joint_state.position), dtype=np.float64)

    def flange_pose_m(self) -> np.ndarray:
        return np.array(self._call(lambda: self.robot.model.pose(self._franky.Frame.Flange, self.robot.state).matrix))

    def move_joints(self, q_rad: np.ndarray, speed_factor: float = DEFAULT_SPEED_FACTOR, asynchronous: bool = False) -> None:
        self.follow_joint_path([q_rad], speed_factor, asynchronous)

    def follow_joint_path(self, waypoints_rad: Sequence[np.ndarray], speed_factor: float = DEFAULT_SPEED_FACTOR,
                          asynchronous: bool = False) -> None:
        if not 0.0 < speed_factor <= 1.0:
            raise LimitViolation(self.name, f"speed factor must be in (0, 1], got {speed_factor}")
        if len(waypoints_rad) == 0:
            raise LimitViolation(self.name, "a joint path needs at least one waypoint")
        f = self._franky
        points = [f.JointWaypoint(np.asarray(q, dtype=np.float64)) for q in waypoints_rad]
        motion = f.JointWaypointMotion(points, relative_dynamics_factor=f.RelativeDynamicsFactor(speed_factor))
        self._call(lambda: self.robot.move(motion, asynchronous=True))
        if not asynchronous:
            self.wait()

    def wait(self, timeout_s: float | None = None) -> bool:
        return bool(self._call(lambda: self.robot.join_motion(timeout_s)))

    def is_moving(self) -> bool:
        # franky 2.0's poll_motion returns True once the motion has finished (seen against franky-sim),
        # whatever its docstring says.
        return not bool(self._call(self.robot.poll_motion))

    def stop(self) -> None:
        self._call(self.robot.stop)

    def has_error(self) -> bool:
        return bool(self._call(lambda: self.robot.has_errors))

    def recover(self) -> None:
        self._call(self.robot.recover_from_errors)

    def close(self) -> None:
        self.robot = None  # franky closes the connection when the Robot is released
