"""Time-parametrisation of a joint path with ruckig, within the Panda's velocity, acceleration and jerk limits.

Each segment runs rest to rest as one path parameter s from 0 to 1 along the straight joint
segment the twin checked, so the arm cannot leave it; s's velocity, acceleration and jerk
limits are the tightest any joint allows over its share of the segment (franky's own waypoint
motions are ruckig too). Limits are scaled by the speed factor (jerk by its cube).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ruckig import InputParameter, Result, Ruckig, Trajectory

from twinsim.robot import panda

JERK_LIMITS_RAD_S3 = np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0])  # Panda datasheet


class TimingError(ValueError):
    """ruckig found no trajectory within the limits."""


@dataclass
class TimedPath:
    waypoints_rad: np.ndarray
    segment_s: list[float]
    max_off_path_rad: float  # largest overshoot past a segment's end among the samples (0: stays on the segment)
    segments: list[Trajectory | None] = field(default_factory=list)  # ruckig's, per segment (None: no motion)

    @property
    def duration_s(self) -> float:
        return float(sum(self.segment_s))

    def configurations_at(self, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the arm is at each tick of a clock at ``rate_hz`` along the timed path (a tracker's frames), and
        the waypoint index + fraction of each."""
        qs, where = [self.waypoints_rad[0]], [0.0]
        for i, (q0, q1, d, traj) in enumerate(zip(self.waypoints_rad[:-1], self.waypoints_rad[1:], self.segment_s,
                                                  self.segments, strict=True)):
            if traj is None:
                continue
            for t in np.arange(1.0 / rate_hz, d + 1.0 / rate_hz, 1.0 / rate_hz):
                s = float(np.clip(traj.at_time(min(t, d))[0][0], 0.0, 1.0))
                qs.append(q0 + s * (q1 - q0))
                where.append(i + s)
        return np.array(qs), np.array(where)


def _segment(q0: np.ndarray, q1: np.ndarray, speed_factor: float) -> Trajectory:
    d = np.abs(q1 - q0)
    moving = d > 1e-12
    inp = InputParameter(1)
    inp.current_position, inp.target_position = [0.0], [1.0]
    inp.current_velocity = inp.current_acceleration = inp.target_velocity = inp.target_acceleration = [0.0]
    inp.max_velocity = [float(np.min(panda.VELOCITY_LIMITS_RAD_S[moving] * speed_factor / d[moving]))]
    inp.max_acceleration = [float(np.min(panda.ACCELERATION_LIMITS_RAD_S2[moving] * speed_factor / d[moving]))]
    inp.max_jerk = [float(np.min(JERK_LIMITS_RAD_S3[moving] * speed_factor**3 / d[moving]))]
    traj = Trajectory(1)
    result = Ruckig(1).calculate(inp, traj)
    if result not in (Result.Working, Result.Finished):
        raise TimingError(f"ruckig: {result} for a segment of {np.max(d):.3f} rad")
    return traj


def time_path(waypoints_rad: Sequence[np.ndarray] | np.ndarray, speed_factor: float, samples_per_segment: int = 20) -> TimedPath:
    W = np.asarray(waypoints_rad, dtype=np.float64)
    durations: list[float] = []
    segments: list[Any] = []  # a ruckig trajectory per segment, None where the arm stands still
    off = 0.0
    for q0, q1 in zip(W[:-1], W[1:], strict=True):
        if np.max(np.abs(q1 - q0)) < 1e-12:
            durations.append(0.0)
            segments.append(None)
            continue
        traj = _segment(q0, q1, speed_factor)
        durations.append(float(traj.duration))
        segments.append(traj)
        s = np.array([traj.at_time(t)[0][0] for t in np.linspace(0.0, traj.duration, samples_per_segment)])
        off = max(off, float(np.max(np.maximum(s - 1.0, -s))) * float(np.max(np.abs(q1 - q0))))  # overshoot past an end
    return TimedPath(W, durations, max(off, 0.0), segments)
