"""What the procedure receives from a rig: device interfaces and the data a real system has, nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from twinsim.hal.interfaces import Arm, CArm, Operator, Tracker
from twinsim.motion.room_model import RoomModel
from twinsim.procedure.tolerances import ProcedureTolerances
from twinsim.robot.nominal import NominalPanda
from twinsim.tracking.bead_phantom import CArmPhantom
from twinsim.tracking.fiducials import RegistrationTarget


@dataclass(frozen=True)
class Devices:
    """A rig as the twin's side sees it.

    ``arm``, ``tracker``, ``carm``, ``operator`` and ``navigation`` are ports (``twinsim.hal.ports``): each exposes
    its interface's methods only and holds no reference to a driver, so nothing here reaches the simulated room.
    ``registration`` is the patient's planning data (landmarks and surface of the planning CT, as a clinic has);
    ``room_model`` the room's datasheet parts; ``carm_phantom`` the bead phantom's description, its mount and
    unmount steps as ports.
    """

    rig_name: str
    rig_kind: str  # "sim" or "lab"
    seed: int
    arm: Arm
    tracker: Tracker
    carm: CArm
    operator: Operator
    model: NominalPanda  # the twin's nominal kinematics of the operation robot
    registration: RegistrationTarget
    room_model: RoomModel
    target_level: str  # the level the patient's planning data names
    tolerances: ProcedureTolerances
    navigation: Arm | None = None  # the robot holding the tracker camera (its joint readings place it in the twin)
    carm_phantom: CArmPhantom | None = None
