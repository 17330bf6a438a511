"""Scripted baselines for the environments: what a controller that reads only the observation can do, and chance."""

from __future__ import annotations

import numpy as np

from twinsim import frames


class AlignController:
    """NeedleGuideAlign: the procedure's closed-loop correction as a policy.

    The tracked tip's offset from the goal, and the bore's tilt from the path, each driven to
    zero by a proportional step clipped to the action bounds (the env's ``max_step_mm`` and
    ``max_step_deg`` per unit action).
    """

    def __init__(self, max_step_mm: float = 2.0, max_step_deg: float = 1.0, gain: float = 0.8) -> None:
        self.max_step_mm, self.max_step_deg, self.gain = max_step_mm, max_step_deg, gain

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        tip, axis = np.asarray(obs[:3], float), np.asarray(obs[3:6], float)
        if obs[13] < 0.5:  # not tracked: hold still rather than act on a stale pose
            return np.zeros(5, dtype=np.float32)
        move = -self.gain * tip / self.max_step_mm
        z = np.array([0.0, 0.0, 1.0])
        turn = np.cross(axis, z)  # rotation taking the bore onto the path, in the goal's frame
        s = np.linalg.norm(turn)
        angle_deg = frames.angle_between_deg(axis, z)
        rot = turn / s * self.gain * angle_deg / self.max_step_deg if s > 1e-9 else np.zeros(3)
        return np.clip(np.r_[move, rot[:2]], -1.0, 1.0).astype(np.float32)


class RandomPolicy:
    def __init__(self, action_space, seed: int = 0) -> None:  # noqa: ANN001 (any gymnasium space)
        self.space = action_space
        self.space.seed(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.space.sample()
