"""Time-parametrisation of a joint path with ruckig, within the Panda's velocity, acceleration and jerk limits.

Each segment runs rest to rest with phase synchronisation, so every joint moves in proportion
and the arm stays on the straight joint segment the twin checked (franky's own waypoint
motions are ruckig too). Limits are scaled by the speed factor (jerk by its cube).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ruckig import InputParameter, Result, Ruckig, Synchronization, Trajectory

from twinsim.robot import panda

JERK_LIMITS_RAD_S3 = np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0])  # Panda datasheet


class TimingError(ValueError):
    """ruckig found no trajectory within the limits."""


@dataclass
class TimedPath:
    waypoints_rad: np.ndarray
    segment_s: list[float]
    max_off_path_rad: float  # largest departure of a sampled state from its straight segment

    @property
    def duration_s(self) -> float:
        return float(sum(self.segment_s))


def _segment(q0: np.ndarray, q1: np.ndarray, speed_factor: float) -> Trajectory:
    inp = InputParameter(7)
    inp.current_position, inp.target_position = q0.tolist(), q1.tolist()
    inp.current_velocity = inp.current_acceleration = inp.target_velocity = inp.target_acceleration = [0.0] * 7
    inp.max_velocity = (panda.VELOCITY_LIMITS_RAD_S * speed_factor).tolist()
    inp.max_acceleration = (panda.ACCELERATION_LIMITS_RAD_S2 * speed_factor).tolist()
    inp.max_jerk = (JERK_LIMITS_RAD_S3 * speed_factor**3).tolist()
    inp.synchronization = Synchronization.Phase
    traj = Trajectory(7)
    result = Ruckig(7).calculate(inp, traj)
    if result not in (Result.Working, Result.Finished):
        raise TimingError(f"ruckig: {result} for a segment of {np.max(np.abs(q1 - q0)):.3f} rad")
    return traj


def time_path(waypoints_rad: Sequence[np.ndarray], speed_factor: float, samples_per_segment: int = 20) -> TimedPath:
    W = np.asarray(waypoints_rad, dtype=np.float64)
    durations, off = [], 0.0
    for q0, q1 in zip(W[:-1], W[1:], strict=True):
        d = q1 - q0
        if np.max(np.abs(d)) < 1e-9:
            durations.append(0.0)
            continue
        traj = _segment(q0, q1, speed_factor)
        durations.append(float(traj.duration))
        for t in np.linspace(0.0, traj.duration, samples_per_segment):
            q = np.asarray(traj.at_time(t)[0])
            s = float(np.clip((q - q0) @ d / (d @ d), 0.0, 1.0))
            off = max(off, float(np.max(np.abs(q - (q0 + s * d)))))
    return TimedPath(W, durations, off)
