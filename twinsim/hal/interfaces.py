"""The device interfaces every workflow talks to; simulated and real drivers implement them.

Small on purpose: what a Franka (franky), an NDI tracker (scikit-surgerynditracker) and a
C-arm with a calibration file can all do. Units: joints rad, poses metres in the robot's base
frame (as franky reports them), tracker poses mm (as NDI reports them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from twinsim.imaging.acquisition import Acquisition

DEFAULT_SPEED_FACTOR = 0.2  # of the arm's velocity/acceleration limits: a cautious default near a patient


@runtime_checkable
class Arm(Protocol):
    """A 7-joint arm. Motions are asynchronous underneath; ``asynchronous=False`` waits for the end."""

    name: str

    def read_joints_rad(self) -> np.ndarray: ...

    def flange_pose_m(self) -> np.ndarray:
        """``T_base_flange`` (metres) from the controller's own (nominal) kinematic model."""
        ...

    def move_joints(self, q_rad: np.ndarray, speed_factor: float = DEFAULT_SPEED_FACTOR,
                    asynchronous: bool = False) -> None: ...

    def follow_joint_path(self, waypoints_rad: Sequence[np.ndarray], speed_factor: float = DEFAULT_SPEED_FACTOR,
                          asynchronous: bool = False) -> None: ...

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the current motion: True when it ended, False at the timeout; raises its error."""
        ...

    def is_moving(self) -> bool: ...

    def stop(self) -> None: ...

    def has_error(self) -> bool: ...

    def recover(self) -> None:
        """Clear a reflex or error state so the arm accepts motions again."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Tracker(Protocol):
    """scikit-surgery's tracker shape; ``sksurgerynditracker.NDITracker`` fits it unchanged."""

    def start_tracking(self) -> None: ...

    def stop_tracking(self) -> None: ...

    def get_frame(self) -> tuple[list, list, list, list, list]: ...

    def get_tool_descriptions(self) -> tuple[list, list]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CArmView:
    name: str
    lao_deg: float
    cranial_deg: float


@runtime_checkable
class CArm(Protocol):
    name: str

    def move_to(self, view: CArmView) -> None: ...

    def acquire(self) -> Acquisition:
        """One exposure at the current view: the image and its projection geometry."""
        ...

    def park(self) -> None:
        """Roll the C-arm away from the table so the robot can work; the next ``move_to`` brings it back."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Operator(Protocol):
    """The people in the room: the steps of a workflow that hands do.

    Each method yields once per pose or touch, while the pose is held, so the workflow reads
    the sensors then; the real operator is prompted in the terminal, the simulated one moves
    things in the room.
    """

    def say(self, message: str) -> None: ...

    def acknowledge(self, message: str) -> None:
        """An interlock told to the people at the rig; returns once they have acknowledged it."""
        ...

    def approve_motion(self, what: str) -> None:
        """The next robot motion (checked in the twin) told to the people at the rig; returns once they let it go."""
        ...

    def pivot_pointer(self, n_poses: int) -> Iterator[int]: ...

    def hand_guide_tip_pivot(self, arm: Arm, n_poses: int, rod_extension_mm: float = 0.0) -> Iterator[int]:
        """The robot in guiding mode pivoted about its needle-guide tip in a divot; with ``rod_extension_mm`` > 0,
        about the tip of a calibration rod in the guide's bore standing out that far beyond the tip."""
        ...

    def touch_landmarks(self, names: Sequence[str]) -> Iterator[str]: ...

    def touch_surface(self, n_points: int) -> Iterator[int]: ...

    def trace_surface(self, surface: str, n_points: int) -> Iterator[int]:
        """Touch ``n_points`` points with the pointer, one per yield; ``"skin"``: over the patient's back around the target."""
        ...

    def mark_landmarks(self, acquisitions: Sequence[Acquisition], level: str, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """The clinician's clicks: per image, each named landmark's pixel ``(u, v)``."""
        ...
