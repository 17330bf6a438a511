"""Joint-space motion over time at the Panda's velocity and acceleration limits.

Each segment is a synchronised trapezoidal profile: every joint starts and stops together,
and the joint that needs longest runs at its limit (scaled by the speed factor). Waypoints
are reached at rest, as franky's ``JointWaypointMotion`` does with zero waypoint velocity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twinsim.robot import panda


class Segment:
    def __init__(self, q0: np.ndarray, q1: np.ndarray, speed_factor: float) -> None:
        self.q0, self.dq = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64) - q0
        moving = np.abs(self.dq) > 1e-12
        if not moving.any():
            self.duration_s, self.v, self.a = 0.0, 1.0, 1.0
            return
        # Speed and acceleration of the path parameter s in [0, 1] that keep every joint within its limits.
        self.v = float(np.min(panda.VELOCITY_LIMITS_RAD_S[moving] * speed_factor / np.abs(self.dq[moving])))
        self.a = float(np.min(panda.ACCELERATION_LIMITS_RAD_S2[moving] * speed_factor / np.abs(self.dq[moving])))
        if self.v * self.v / self.a >= 1.0:  # never reaches cruise speed: triangular profile
            self.v = float(np.sqrt(self.a))
            self.duration_s = 2.0 / self.v
        else:
            self.duration_s = 1.0 / self.v + self.v / self.a

    def at(self, t_s: float) -> np.ndarray:
        if self.duration_s == 0.0 or t_s >= self.duration_s:
            return self.q0 + self.dq
        t_acc = self.v / self.a
        if t_s < t_acc:
            s = 0.5 * self.a * t_s * t_s
        elif t_s > self.duration_s - t_acc:
            r = self.duration_s - t_s
            s = 1.0 - 0.5 * self.a * r * r
        else:
            s = 0.5 * self.v * t_acc + self.v * (t_s - t_acc)
        return self.q0 + min(max(s, 0.0), 1.0) * self.dq


class JointTrajectory:
    """Waypoints from ``q_start_rad``; ``at(t)`` gives the joints ``t`` seconds after the start."""

    def __init__(self, q_start_rad: np.ndarray, waypoints_rad: Sequence[np.ndarray], speed_factor: float) -> None:
        self.segments, q = [], np.asarray(q_start_rad, dtype=np.float64)
        for w in waypoints_rad:
            self.segments.append(Segment(q, np.asarray(w, dtype=np.float64), speed_factor))
            q = np.asarray(w, dtype=np.float64)
        self.duration_s = sum(s.duration_s for s in self.segments)

    def at(self, t_s: float) -> np.ndarray:
        for seg in self.segments:
            if t_s < seg.duration_s:
                return seg.at(t_s)
            t_s -= seg.duration_s
        return self.segments[-1].at(np.inf)
