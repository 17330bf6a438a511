"""Test helper: the calibration chain in the simulated room, the HAL workflow with the simulated operator.

:func:`twinsim.workflows.calibration.run_calibration` does the work; this wires it to the
room's tracker, arm and people, and registers to the room's own CT meshes.
"""

from __future__ import annotations

from typing import Any

from twinsim.hal.sim.operator import SimOperator
from twinsim.sim.world import OperatingRoom
from twinsim.tracking.fiducials import patient_registration_target
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import KinematicModel
from twinsim.workflows.calibration import SessionSettings
from twinsim.workflows.calibration import run_calibration as run_workflow

__all__ = ["SessionSettings", "run_calibration"]


def run_calibration(room: OperatingRoom, tracker: Any, arm: Any, model: KinematicModel, settings: SessionSettings | None = None,
                    progress: bool | None = None, vega: Any = None) -> CalibrationSet:
    """``tracker``: the room's SimulatedVega or a HAL tracker in front of it (then pass ``vega``)."""
    s = settings or SessionSettings()
    target = patient_registration_target(room.patient, room.config.patient.target_level)
    operator = SimOperator(room, vega or tracker, target.landmarks_ct_mm, seed=s.seed, fiducial_fle_mm=s.fiducial_fle_mm,
                           surface_touch_mm=s.surface_touch_mm)
    return run_workflow(arm, tracker, model, operator, target, s, progress)
