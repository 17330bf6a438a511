"""Hardware abstraction layer: device interfaces, one error hierarchy, and the rig file.

Workflows import from here only; concrete drivers live in ``twinsim.hal.sim`` (the PyBullet
room) and ``twinsim.hal.real`` (franky, scikit-surgerynditracker, a C-arm's image folder),
``twinsim.hal.rig`` reads the rig file, and ``twinsim.rigs.open_rig`` opens the drivers it names and hands
the twin's side ports (``twinsim.hal.ports``) in front of them.
"""

from twinsim.hal.errors import ConnectionLost, HalError, LimitViolation, MotionAborted, RigFileError, ToolMissing
from twinsim.hal.interfaces import DEFAULT_SPEED_FACTOR, Arm, CArm, CArmView, Operator, Tracker

__all__ = ["Arm", "CArm", "CArmView", "ConnectionLost", "DEFAULT_SPEED_FACTOR", "HalError", "LimitViolation",
           "MotionAborted", "Operator", "RigFileError", "ToolMissing", "Tracker"]
