"""The simulated operation robot behind the HAL ``Arm``: timed motion, collision reflex, errors.

It is the arm as built (see :mod:`twinsim.sim.robot_driver`: perturbed URDF, encoder zero
offsets, repeatability noise) moving over simulated time. Motions advance with the shared
:class:`SimClock` (each tracker frame is 1/60 s), so the tracker can be read mid-motion;
``wait`` runs the clock on, faster than real time. Every interpolated configuration is
checked against the room: at the first contact the arm stops there and the motion ends with
"motion aborted (collision reflex)", as a Franka's reflex would, and further motions are
refused until ``recover()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pybullet as pb

from twinsim.hal.errors import LimitViolation, MotionAborted
from twinsim.hal.interfaces import DEFAULT_SPEED_FACTOR
from twinsim.hal.sim.clock import SimClock
from twinsim.hal.sim.trajectory import JointTrajectory
from twinsim.robot import panda
from twinsim.robot.nominal import NominalPanda
from twinsim.sim.robot_driver import SimulatedArm
from twinsim.sim.world import OperatingRoom

TICK_S = 1.0 / 60.0  # the clock step while waiting: one tracker frame
MAX_STEP_RAD = 0.004  # interpolation step for contact checks (~3 mm at the tool)


class SimArm(SimulatedArm):
    def __init__(self, room: OperatingRoom, clock: SimClock, name: str = "operation",
                 obstacles: Sequence[str] = ("patient", "table", "carm", "navigation robot")) -> None:
        super().__init__(room, name)
        self.clock = clock
        self.model = NominalPanda(room.config.needle_guide if room.robots[name].config.tool == "needle_guide"
                                  else room.config.tracker_camera)
        group = f"{name} robot"
        self._own = room.bodies[group]
        # Contacts present at start-up (a cart on the floor beside the table) are not motion faults.
        self._names = {b: g for g in obstacles if g in room.bodies for b in room.bodies[g]}
        self._names[room.skin_body] = "the patient's skin"
        self._names.update({b: f"vertebra {lvl}" for lvl, b in room.vertebra_bodies.items()})
        self._obstacles = list(self._names)
        self._baseline = {b for b in self._obstacles if self._touching(b)}
        self._trajectory: JointTrajectory | None = None
        self._t0 = 0.0
        self._error: MotionAborted | None = None
        self._pending: MotionAborted | None = None
        self.contact: str | None = None
        clock.subscribe(self._follow)

    # ---- reading ---------------------------------------------------------------------
    def flange_pose_m(self) -> np.ndarray:
        return self.model.fk_m(self.read_joints_rad(), panda.FLANGE_LINK)

    def is_moving(self) -> bool:
        return self._trajectory is not None

    def has_error(self) -> bool:
        return self._error is not None

    # ---- commands --------------------------------------------------------------------
    def move_joints(self, q_rad: np.ndarray, speed_factor: float = DEFAULT_SPEED_FACTOR,  # type: ignore[override]
                    asynchronous: bool = False) -> None:
        self.follow_joint_path([q_rad], speed_factor, asynchronous)

    def follow_joint_path(self, waypoints_rad: Sequence[np.ndarray], speed_factor: float = DEFAULT_SPEED_FACTOR,
                          asynchronous: bool = False) -> None:
        if self._error is not None:
            raise MotionAborted(self.name, f"the arm is in an error state ({self._error}); call recover() first")
        if not 0.0 < speed_factor <= 1.0:
            raise LimitViolation(self.name, f"speed factor must be in (0, 1], got {speed_factor}")
        if len(waypoints_rad) == 0:
            raise LimitViolation(self.name, "a joint path needs at least one waypoint")
        physical = []
        for i, q in enumerate(waypoints_rad):
            try:
                qc = panda.check_joint_positions(q, f"waypoint {i}")
            except panda.JointLimitError as exc:
                raise LimitViolation(self.name, str(exc)) from exc
            # The arm as built: encoder zero offsets, and the last waypoint lands within the repeatability.
            noise = self._rng.normal(0.0, self.joint_noise_sd_rad, 7) if i == len(waypoints_rad) - 1 else 0.0
            physical.append(np.clip(qc + self.zero_offset_rad + noise, panda.SOFT_LIMITS_RAD[:, 0], panda.SOFT_LIMITS_RAD[:, 1]))
        self._trajectory = JointTrajectory(self.room.joint_positions(self.name), physical, speed_factor)
        self._t0 = self.clock.now_s
        self._pending = None
        if not asynchronous:
            self.wait()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Run simulated time until the motion ends (True) or ``timeout_s`` simulated seconds pass (False)."""
        deadline = None if timeout_s is None else self.clock.now_s + timeout_s
        while self._trajectory is not None and (deadline is None or self.clock.now_s < deadline):
            self.clock.advance(TICK_S)
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
        return self._trajectory is None

    def stop(self) -> None:
        if self._trajectory is not None:
            self._trajectory = None
            self._pending = MotionAborted(self.name, "motion aborted (stopped): a stop command ended the motion")

    def trip_reflex(self, why: str) -> None:
        """A reflex from outside the plan (a push on a link, a cable caught): the arm stops where it is, in error."""
        self._trajectory = None
        self._error = MotionAborted(self.name, f"motion aborted (collision reflex): {why} at t = {self.clock.now_s:.2f} s")
        self._pending = self._error

    def recover(self) -> None:
        self._error = None
        self._pending = None
        self.contact = None

    def put_back(self, physical_q_rad: np.ndarray) -> None:
        """Simulation only: the arm stands at ``physical_q_rad`` (its true joints), at rest and out of error, as a lab
        would bring it back before the next patient; for benches and episodes, never for the procedure."""
        self.recover()
        self._trajectory = None
        self.room.set_joint_positions(self.name, physical_q_rad)

    def close(self) -> None:
        self.model.close()

    # ---- simulation ------------------------------------------------------------------
    def _touching(self, other: int) -> str | None:
        for body in self._own:
            if pb.getClosestPoints(body, other, distance=0.0, physicsClientId=self.room.client):
                return self._names.get(other, f"body {other}")
        return None

    def _contact(self) -> str | None:
        for b in self._obstacles:
            if b not in self._baseline and (hit := self._touching(b)):
                return hit
        return None

    def _follow(self, now_s: float) -> None:
        traj = self._trajectory
        if traj is None:
            return
        t = min(now_s - self._t0, traj.duration_s)
        q_now = self.room.joint_positions(self.name)
        q_goal = traj.at(t)
        n = max(1, int(np.ceil(np.max(np.abs(q_goal - q_now)) / MAX_STEP_RAD)))
        for k in range(1, n + 1):
            q = q_now + (q_goal - q_now) * k / n
            self.room.set_joint_positions(self.name, q)
            if (hit := self._contact()) is not None:
                self.room.set_joint_positions(self.name, q_now + (q_goal - q_now) * (k - 1) / n)  # stops at the contact
                self.contact = hit
                self._trajectory = None
                self._error = MotionAborted(self.name, f"motion aborted (collision reflex): contact with {hit} "
                                                       f"{now_s - self._t0:.2f} s into the motion")
                self._pending = self._error
                return
        if t >= traj.duration_s:
            self._trajectory = None
