"""The simulated room behind the HAL, calibrated, for the benches that measure the honest chain.

Evaluation code: it wires the simulated devices (timed arm, tracker on a shared clock, C-arm,
simulated people), runs the calibration chain and the C-arm calibration through the
workflows, and keeps handles on the room's truth so a bench can score what the twin
estimated through its sensors. The scene's error budget decides what the sensors get wrong;
``terms`` switches its terms on and off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.anatomy.ct import CTVolume, load_ct
from twinsim.anatomy.patient import Patient
from twinsim.evaluation.placement_truth import true_T_world_ref_mm
from twinsim.hal.interfaces import CArmView
from twinsim.hal.sim.arm import SimArm
from twinsim.hal.sim.carm import SimCArm
from twinsim.hal.sim.clock import SimClock
from twinsim.hal.sim.operator import SimOperator
from twinsim.hal.sim.phantom import sim_phantom, true_T_marker_source_mm
from twinsim.hal.sim.tracker import SimTracker
from twinsim.imaging.acquisition import Acquisition
from twinsim.robot import panda
from twinsim.robot.nominal import NominalPanda
from twinsim.sim.carm_imaging import carm_projection
from twinsim.sim.markers_in_room import room_tracker
from twinsim.sim.scene_config import SceneConfig, load_scene_config
from twinsim.sim.world import OperatingRoom, build_operating_room, scene_patient_files
from twinsim.tracking.carm_calibration import CArmCalibrationResult
from twinsim.tracking.fiducials import patient_registration_target
from twinsim.tracking.vega_sim import SimulatedVega
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.workflows.calibration import SessionSettings, run_calibration
from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom
from twinsim.workflows.tracked_xray import acquire_tracked


def scene_with_budget(scene: str | Path | SceneConfig | None, terms: Iterable[str] | None) -> SceneConfig:
    """The scene with only ``terms`` of its error budget on (None: as the file says)."""
    cfg = scene if isinstance(scene, SceneConfig) else load_scene_config(scene)
    if terms is None:
        return cfg
    return dataclasses.replace(cfg, error_budget=cfg.error_budget.only(tuple(terms)))


@dataclass
class TrackedRoom:
    room: OperatingRoom
    clock: SimClock
    vega: SimulatedVega
    arm: SimArm
    tracker: SimTracker
    carm: SimCArm
    operator: SimOperator
    model: NominalPanda
    calibration: CalibrationSet
    carm_skipped: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    _ct: CTVolume | None = None

    # ---- truth (evaluation only) ---------------------------------------------------------
    def T_world_ref_mm(self) -> np.ndarray:
        """The reference marker's frame as an error-free tracker would report it: its definition fitted to its
        spheres as built (a rigid offset from the definition's frame when the spheres are off, fixed to the body)."""
        return true_T_world_ref_mm(self.vega)

    def T_ref_ct_true(self) -> np.ndarray:
        return frames.invert(self.T_world_ref_mm()) @ frames.scale_translation(self.room.T_world_ct, 1000.0)

    def T_ref_base_true(self) -> np.ndarray:
        return frames.invert(self.T_world_ref_mm()) @ frames.scale_translation(self.room.base_pose("operation"), 1000.0)

    def tool_ref_true(self) -> tuple[np.ndarray, np.ndarray]:
        """The needle guide's real tip (mm) and bore axis (unit) in ``ref``: the guide as mounted."""
        T = frames.invert(self.T_world_ref_mm()) @ frames.scale_translation(self.room.link_pose("operation", panda.TOOL_TIP_LINK), 1000.0)
        return T[:3, 3].copy(), T[:3, 2].copy()

    def ct_volume(self) -> CTVolume:
        """The patient's CT and labels (for scoring a reconstruction on its grid)."""
        if self._ct is None:
            ct_path, labels_path, table_path, _ = scene_patient_files(self.room.config)
            self._ct = load_ct(ct_path, labels_path, table_path)
        return self._ct

    def true_geometry_ct(self, size_px: int) -> Any:
        """The C-arm's true projection geometry now, in ``ct`` (what the DRR was rendered with)."""
        return carm_projection(self.room, (size_px, size_px), "ct")

    # ---- X-rays ------------------------------------------------------------------------
    def xray_pair(self, views: tuple[CArmView, CArmView]) -> tuple[list[Acquisition], list[Any]]:
        """Two tracked X-rays (geometry in ``ref`` from the tracker and the C-arm calibration), and each one's true
        geometry in ``ct`` (for the simulated clinician's clicks and the ground-truth-geometry comparison)."""
        acqs, truth = [], []
        for v in views:
            acqs.append(acquire_tracked(self.carm, self.tracker, self.calibration.carm, v))
            truth.append(self.true_geometry_ct(self.carm.size_px))
        return acqs, truth

    def close(self) -> None:
        self.model.close()
        self.arm.close()
        self.room.close()


def true_carm_calibration(room: OperatingRoom, vega: SimulatedVega, size_px: int) -> CArmCalibrationResult:
    """The C-arm's true parameters, standing in for its calibration when that term of the budget is off."""
    g = room.config.carm.geometry
    return CArmCalibrationResult(g.sdd_mm, (0.0, 0.0), true_T_marker_source_mm(room, vega), size_px, size_px,
                                 g.pixel_spacing_for((size_px, size_px)), 0.0, [], 0, {"source": "the room's truth"})


def open_tracked_room(scene: str | Path | SceneConfig | None = None, terms: Iterable[str] | None = None, seed: int = 0,
                      size_px: int = 512, n_samples: int = 256, calibration: CalibrationSet | None = None,
                      patient: Patient | None = None, progress: bool | None = None, calibrate_carm: bool = True) -> TrackedRoom:
    """Build the room with the budget's ``terms``, calibrate everything through the workflows, return it.

    ``calibrate_carm``: False leaves the C-arm uncalibrated (no X-rays will be taken).
    """
    cfg = scene_with_budget(scene, terms)
    room = build_operating_room(cfg, progress=progress, patient=patient)
    try:
        clock = SimClock()
        vega = room_tracker(room, {"seed": seed})
        arm = SimArm(room, clock)
        tracker = SimTracker(vega, clock)
        target = patient_registration_target(room.patient, cfg.patient.target_level)
        operator = SimOperator(room, vega, target.landmarks_ct_mm, seed=seed)
        model = NominalPanda(cfg.needle_guide)
        carm = SimCArm(room, size_px=size_px, n_samples=n_samples, seed=seed)
        timings = {}
        t0 = time.perf_counter()
        cal = calibration or run_calibration(arm, tracker, model, operator, target, SessionSettings(seed=seed), progress=progress)
        timings["calibration_s"] = time.perf_counter() - t0
        skipped: dict[str, str] = {}
        if not calibrate_carm:
            pass
        elif cfg.error_budget.carm_uses_truth:
            cal.carm = true_carm_calibration(room, vega, size_px)
        elif cal.carm is None or (cal.carm.width_px, cal.carm.height_px) != (size_px, size_px):
            t0 = time.perf_counter()
            run = calibrate_carm_with_phantom(carm, tracker, sim_phantom(room, vega, carm, seed=seed))
            timings["carm_calibration_s"] = time.perf_counter() - t0
            cal.carm, skipped = run.result, run.skipped
            room.set_carm_angles(cfg.carm.lao_deg, cfg.carm.cranial_deg)
        return TrackedRoom(room, clock, vega, arm, tracker, carm, operator, model, cal, skipped, timings)
    except Exception:
        room.close()
        raise
