"""One error hierarchy for every device: what workflows catch, whatever driver is behind the interface.

Each error names the device (``device``) and says what happened in words an operator can act
on. Drivers translate their own exceptions (franky's, ndicapi's, the simulation's) into these.
"""

from __future__ import annotations

from twinsim.errors import TwinsimError


class HalError(TwinsimError, RuntimeError):
    """A device failed; ``device`` names which (as in the rig file)."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device


class ConnectionLost(HalError):
    """The device stopped answering or the connection dropped (cable, network, power, crashed server)."""


class MotionAborted(HalError):
    """A motion stopped before its goal: a collision reflex, a stop command or a controller error."""


class LimitViolation(HalError):
    """A command outside the device's limits (joints, velocity, acceleration, workspace)."""


class ToolMissing(HalError):
    """A tracked tool the workflow needs is not seen (occluded, outside the volume, not loaded)."""


class RigFileError(TwinsimError, ValueError):
    """The rig file is missing, malformed, or holds an unknown or misspelt key."""
