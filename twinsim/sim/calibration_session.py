"""The calibration chain in the simulated room: the HAL workflow with the simulated operator.

:func:`twinsim.workflows.calibration.run_calibration` does the work; this wires it to the
room's tracker, arm and people, and registers to the room's own CT meshes.
"""

from __future__ import annotations

from typing import Any

from twinsim.hal.sim.operator import SimOperator
from twinsim.sim.world import OperatingRoom
from twinsim.tracking.fiducials import RegistrationTarget, registration_target
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import KinematicModel
from twinsim.workflows.calibration import SessionSettings
from twinsim.workflows.calibration import run_calibration as run_workflow

__all__ = ["SessionSettings", "room_registration_target", "run_calibration"]


def room_registration_target(room: OperatingRoom) -> RegistrationTarget:
    vertebrae = {lvl: room.patient.vertebra(lvl) for lvl in room.patient.levels}
    return registration_target(vertebrae, room.config.patient.target_level)


def run_calibration(room: OperatingRoom, tracker: Any, arm: Any, model: KinematicModel, settings: SessionSettings | None = None,
                    progress: bool | None = None, vega: Any = None) -> CalibrationSet:
    """``tracker``: the room's SimulatedVega or a HAL tracker in front of it (then pass ``vega``)."""
    s = settings or SessionSettings()
    target = room_registration_target(room)
    landmarks = dict(zip(target.fiducial_names, target.fiducials_ct_mm, strict=True))
    operator = SimOperator(room, vega or tracker, landmarks, seed=s.seed, fiducial_fle_mm=s.fiducial_fle_mm,
                           surface_touch_mm=s.surface_touch_mm)
    return run_workflow(arm, tracker, model, operator, target, s, progress)
