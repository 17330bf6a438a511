"""A vertebroplasty, step by step over the HAL: calibration, two X-rays, landmarks, reconstruction, plan,
survey, reach, both needle guides placed through checked motions, verification, report.

It talks to devices only through the rig's interfaces, so the same sequence runs on a real
rig. What it knows of the room comes through sensors: the tracker (patient reference, guide,
C-arm, pointer), joint readings, the calibration and the X-rays; shapes come from the room's
datasheet model. Every motion is planned and checked in the twin first (:mod:`twinsim.motion`)
and sent through the guarded arm, which refuses anything unchecked.

Interlocks: tracking lost during a motion stops it; a patient reference that moved since
registration sends the procedure back to register again (robot base from its flange marker,
new X-rays, reconstruction, plan, survey) before any further motion; a motion aborted by the
robot stops the procedure (never retried blindly).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twinsim import frames
from twinsim.hal.errors import HalError, MotionAborted
from twinsim.hal.interfaces import CArmView
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.landmarks_file import CLICKABLE, Clicks, load_clicks
from twinsim.motion.docking import DockPlan, DockSettings, plan_dock
from twinsim.motion.envelope import PatientEnvelope, TableModel
from twinsim.motion.execution import ReferenceMoved, TrackingLostDuringMotion, Watch, run_watched
from twinsim.motion.guarded_arm import GuardedArm, MotionLog
from twinsim.motion.placement import Placement, PlacementSettings, search_placement
from twinsim.motion.planner import MotionPlanner, MotionRefused, PlannedMotion, SightLine, Unreachable
from twinsim.motion.twin_world import ClearanceSettings, TwinWorld
from twinsim.planning.planner import VertebraPlan, plan_vertebra
from twinsim.planning.settings import PlanSettings
from twinsim.procedure.devices import Devices
from twinsim.procedure.steps import Outcome, ProcedureLog, Step, StepFailed, StepRecord, Stop
from twinsim.robot import panda
from twinsim.tracking.calibration import CalibrationError
from twinsim.tracking.carm_calibration import CArmCalibrationResult
from twinsim.tracking.markers import MarkerError, load_marker
from twinsim.tracking.tools import NEEDLE_MARKER, OPERATION_FLANGE, POINTER, REFERENCE
from twinsim.twin.calibration_set import CalibrationSet, save_calibration
from twinsim.twin.sync import TwinSync
from twinsim.twin.tracker_view import ToolIndex, TrackingLost
from twinsim.view.manipulation import GuideManipulator, MoveOutcome
from twinsim.view.recorder import TwinRecorder
from twinsim.view.timeline import FILE_NAME as TIMELINE_FILE
from twinsim.workflows.calibration import SessionSettings, read_frames, run_calibration
from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom
from twinsim.workflows.tracked_xray import acquire_tracked

DEFAULT_VIEWS = (CArmView("AP", 0.0, 0.0), CArmView("RAO 60", -60.0, 0.0))
SIDES = ("left", "right")
INTERLOCKS = (ReferenceMoved, TrackingLostDuringMotion, MotionAborted)  # what stops the arm while it moves
GUIDE_STEP = {"left": Step.GUIDE_LEFT, "right": Step.GUIDE_RIGHT}


class RehearsalError(RuntimeError):
    """A step's outcome that stops the procedure (a refused plan, an unusable survey, a stale calibration)."""


@dataclass(frozen=True)
class RehearsalSettings:
    level: str | None = None  # None: the rig's target level
    views: tuple[CArmView, CArmView] = DEFAULT_VIEWS
    clicks_file: Path | None = None  # the clinician's clicks; None: the operator marks them
    # None: the rig's scene says (its `procedure` section; twinsim.procedure.tolerances.ProcedureTolerances).
    skin_points: int | None = None
    frames_per_touch: int = 5
    plan: PlanSettings = field(default_factory=PlanSettings)
    clearance: ClearanceSettings | None = None
    dock: DockSettings | None = None
    calibration_check_mm: float | None = None  # tracked guide tip vs the joints' prediction: beyond it the calibration is not this room's
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    speed_factor: float = 0.2
    max_reregistrations: int = 1
    fit_settings: Any = None  # recon.fit.FitSettings; None: its defaults
    seed: int = 0


@dataclass
class Registration:
    """What one registration produced, all in the patient reference frame ``ref`` as it stood then."""

    T_cam_ref_mm: np.ndarray
    acquisitions: list[Acquisition]
    image_paths: list[Path]
    clicks: Clicks | None = None
    click_check: Any = None  # recon.consistency.ClickCheck of the clicks, as the landmarks step ran it
    reconstruction: Any = None
    model: Any = None  # the shape model it was fitted with
    plan: VertebraPlan | None = None
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # the model's points on the reconstruction
    table: TableModel | None = None
    envelope: PatientEnvelope | None = None


@dataclass
class GuidePlacement:
    side: str
    dock: DockPlan
    motions: list[PlannedMotion]
    measured_tip_ref_mm: np.ndarray
    measured_axis_ref: np.ndarray
    closed_loop_iterations: int
    converged: bool
    planned_entry_mm: np.ndarray
    planned_target_mm: np.ndarray
    truth: dict[str, Any] | None = None


class Verifier(Protocol):
    """Evaluation code given to a simulated rehearsal: it reads the truth, the procedure never does."""

    def guide(self, record: RehearsalRecord, placed: GuidePlacement) -> dict[str, Any]: ...

    def confirm(self, record: RehearsalRecord, out: Path) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RehearsalRecord:
    """What a rehearsal has produced so far, typed: what the report page, the benches, the scenarios and the
    verifier read. A snapshot of the rehearsal's results, never a handle to drive it."""

    log: ProcedureLog
    settings: RehearsalSettings
    level: str
    registration: Registration | None
    docks: dict[str, DockPlan]
    placed: dict[str, GuidePlacement]
    reregistrations: int
    calibration: CalibrationSet | None
    world: TwinWorld | None  # the twin's collision world as it stood (the report draws it)

    @property
    def succeeded(self) -> bool:
        return self.log.outcome is Outcome.COMPLETED


class Rehearsal:
    def __init__(self, dev: Devices, out: Path, settings: RehearsalSettings | None = None, calibration: CalibrationSet | None = None,
                 verify: Verifier | None = None, progress: bool | None = None,
                 plan_source: Callable[[RehearsalRecord], VertebraPlan] | None = None,
                 recorder: TwinRecorder | None = None, keep_twin: bool = False) -> None:
        """``plan_source``: where the paths come from instead of the planner on the reconstruction (a baseline to compare).
        ``recorder``: the twin's timeline (what a view shows live and replays), built on ``dev``'s tracker and arm; it
        sees every tracker frame the procedure reads, through its own tracker, which replaces ``dev``'s.
        ``keep_twin``: the twin's world stays up after :meth:`run` (for :meth:`manipulator`) until :meth:`close`."""
        self.recorder = recorder
        self.keep_twin = keep_twin
        self._twin_open = False
        self.dev, self.out = (replace(dev, tracker=recorder.tracker) if recorder is not None else dev), Path(out)
        self.tol = tol = dev.tolerances
        s = settings or RehearsalSettings()
        self.s = replace(
            s, skin_points=s.skin_points or tol.skin_touches,
            clearance=s.clearance or ClearanceSettings(robot_mm=tol.robot_clearance_mm, guide_to_patient_mm=tol.guide_to_patient_mm),
            dock=s.dock or DockSettings(dock_standoff_mm=tol.dock_standoff_mm, approach_mm=tuple(tol.approach_mm)),
            calibration_check_mm=s.calibration_check_mm or tol.calibration_check_mm)
        self.plan_source = plan_source
        self.cal = calibration
        self.verify = verify
        self.progress = progress
        self.level = self.s.level or dev.target_level
        self.log = ProcedureLog(self.out / "rehearsal.json")
        self.log.meta = {"rig": dev.rig_name, "rig_kind": dev.rig_kind, "level": self.level,
                         "views": [v.name for v in self.s.views], "seed": self.s.seed}
        self.motion_log = MotionLog()
        self.reg: Registration | None = None
        self.world: TwinWorld | None = None
        self.planner: MotionPlanner | None = None
        self.guarded: GuardedArm | None = None
        self.docks: dict[str, DockPlan] = {}
        self.q_start: np.ndarray | None = None  # where the robot stood at the calibration: where it goes home to
        self.placed: dict[str, GuidePlacement] = {}
        self.recommendation: Placement | None = None
        self.reregistrations = 0
        self.timings: dict[str, float] = {}

    # ---- the sequence: a state machine over the steps --------------------------------------
    def _titles(self) -> dict[Step, str]:
        return {
            Step.CALIBRATION: "Calibration chain (load or measure) and its check against the room",
            Step.XRAYS: "Two tracked X-rays",
            Step.LANDMARKS: "Landmarks marked on both X-rays",
            Step.RECONSTRUCTION: f"{self.level} reconstructed from the two X-rays",
            Step.PLAN: "Both transpedicular paths planned and checked",
            Step.SURVEY: "Patient envelope touched with the pointer; the twin's collision world",
            Step.REACH: "Both paths within the robot's reach, clear of every body",
            Step.GUIDE_LEFT: "Needle guide onto the left path",
            Step.GUIDE_RIGHT: "Needle guide onto the right path",
            Step.REREGISTRATION: f"Patient reference moved: robot base re-registered ({self.reregistrations} of "
                                 f"{self.s.max_reregistrations})",
            Step.HOME: "Robot back to where it started, clear of the C-arm",
            Step.VERIFICATION: "Verification in the true anatomy (simulation only)",
        }

    def _action(self, step: Step) -> Callable[[StepRecord], dict[str, Any] | None]:
        actions: dict[Step, Callable[[StepRecord], dict[str, Any] | None]] = {
            Step.CALIBRATION: self._calibrate, Step.XRAYS: self._xrays, Step.LANDMARKS: self._landmarks,
            Step.RECONSTRUCTION: self._reconstruct, Step.PLAN: self._plan, Step.SURVEY: self._survey, Step.REACH: self._reach,
            Step.GUIDE_LEFT: lambda rec: self._place("left", rec), Step.GUIDE_RIGHT: lambda rec: self._place("right", rec),
            Step.REREGISTRATION: self._reregister_base, Step.HOME: self._home, Step.VERIFICATION: self._verification,
        }
        return actions[step]

    def _next(self, step: Step) -> Step | None:
        """The step after ``step`` done: the registration steps in order, then each guide not yet placed, home,
        and verification where there is a verifier."""
        order = [Step.CALIBRATION, Step.XRAYS, Step.LANDMARKS, Step.RECONSTRUCTION, Step.PLAN, Step.SURVEY, Step.REACH]
        if step is Step.REREGISTRATION:
            return Step.XRAYS
        if step in order[:-1]:
            return order[order.index(step) + 1]
        if step in (Step.REACH, Step.GUIDE_LEFT, Step.GUIDE_RIGHT):
            todo = [GUIDE_STEP[side] for side in SIDES if side not in self.placed]
            return todo[0] if todo else Step.HOME
        if step is Step.HOME and self.verify is not None:
            return Step.VERIFICATION
        return None

    def _acknowledge(self, step: Step, exc: StepFailed, next_step: Step | None) -> None:
        """An interlock that stopped the arm is told to the people at the rig, who acknowledge it before the
        procedure registers again or stops (on a rig whose operator is a person, in the terminal and the view)."""
        if not isinstance(exc.cause, INTERLOCKS):
            return
        what = "register the patient again" if next_step is Step.REREGISTRATION else "the procedure stops"
        message = f"Interlock at {step}: {exc.cause}. Next: {what}."
        entry: dict[str, Any] = {"step": str(step), "interlock": type(exc.cause).__name__, "message": message}
        try:
            self.dev.operator.acknowledge(message)
            entry["acknowledged"] = True
        except HalError as err:  # nobody to ask: said in the log, and the procedure goes on as it would
            entry["acknowledged"], entry["why_not"] = False, str(err)
        self.log.meta.setdefault("interlocks", []).append(entry)

    def _after_failure(self, step: Step, exc: StepFailed) -> Step | None:
        """Where a failed step leads: a moved reference during a guide's motion re-registers (up to the limit);
        anything else stops the procedure."""
        if step in (Step.GUIDE_LEFT, Step.GUIDE_RIGHT) and isinstance(exc.cause, ReferenceMoved) \
                and self.reregistrations < self.s.max_reregistrations:
            self.reregistrations += 1
            return Step.REREGISTRATION
        return None

    @property
    def record(self) -> RehearsalRecord:
        return RehearsalRecord(self.log, self.s, self.level, self.reg, dict(self.docks), dict(self.placed),
                               self.reregistrations, self.cal, self.world)

    def run(self) -> RehearsalRecord:
        t0 = time.perf_counter()
        step: Step | None = Step.CALIBRATION
        try:
            while step is not None:
                current: Step = step
                try:
                    self._run_step(current)
                    step = self._next(current)
                except StepFailed as exc:
                    step = self._after_failure(current, exc)
                    self._acknowledge(current, exc, step)
                    if step is None:
                        raise
            self.log.outcome = Outcome.COMPLETED
        except StepFailed as exc:
            self.log.outcome = Outcome.STOPPED
            self.log.stop = Stop(exc.step, str(exc.cause), type(exc.cause).__name__)
        finally:
            self.log.meta["wall_s"] = time.perf_counter() - t0
            self.log.meta["motions"] = self._motion_counts()
            try:
                from twinsim.procedure.report_page import write_report_page

                self.log.meta["report_page"] = str(write_report_page(self.record, self.out / "rehearsal.png"))
            except Exception as exc:  # noqa: BLE001 (a failed picture must not hide how the procedure ended)
                self.log.meta["report_page_error"] = f"{type(exc).__name__}: {exc}"
            self._save_timeline()
            self.log.write()
            if not self.keep_twin:
                self.close()
        return self.record

    def close(self) -> None:
        """Close the twin's world (after :meth:`run`, or once the view's manipulation is done with it)."""
        if self.world is not None and self._twin_open:
            self.world.close()
        self._twin_open = False

    def _save_timeline(self) -> None:
        if self.recorder is None:
            return
        try:
            tl = self.recorder.timeline
            self.log.meta["twin_timeline"] = {"path": str(tl.save(self.out / TIMELINE_FILE)), "samples": len(tl),
                                              "rate_hz": tl.rate_hz}
            if self.recorder.faults:
                self.log.meta["twin_timeline_faults"] = sorted(set(self.log.meta.get("twin_timeline_faults", []))
                                                               | set(self.recorder.faults))
        except OSError as exc:
            self.log.meta["twin_timeline_error"] = f"{type(exc).__name__}: {exc}"

    def manipulator(self) -> GuideManipulator:
        """Virtual-to-real on this rehearsal's twin: guide poses chosen in the view, checked in the twin's world and
        made through the same guarded arm, interlocks and motion log as the procedure's. Each move made is added to
        ``rehearsal.json`` (``view_moves``) and to the twin's timeline."""
        if self.world is None or not self._twin_open or self.planner is None:
            raise RehearsalError("the twin's world is not up: the survey has not run yet, or the rehearsal was run "
                                 "without keep_twin and has closed it")

        def made(outcome: MoveOutcome) -> None:
            self.log.meta.setdefault("view_moves", []).append(outcome.summary())
            self.log.meta["motions"] = self._motion_counts()
            self._tell_recorder(lambda r: r.event("view move", "Guide moved to a pose chosen in the view",
                                                  "done" if outcome.ok else "failed", outcome.message))
            self._save_timeline()
            self.log.write()

        return GuideManipulator(self._planner, self._guarded, self.dev.tracker, self.dev.model, self._cal,
                                self._reg.T_cam_ref_mm, self.s.speed_factor, on_move=made)

    def guide_poses(self) -> dict[str, np.ndarray]:
        """Named guide poses (``ref``, mm) a person may want to move the guide to: where it started, and each
        path's approach and docked poses."""
        out: dict[str, np.ndarray] = {}
        if self.planner is not None and self.q_start is not None:
            out["standby: where the robot started"] = self.planner.tool_pose_mm(self.q_start)
        for side, d in self.docks.items():
            out[f"{side} path: approach pose"] = d.T_approach_mm
            out[f"{side} path: docked"] = d.T_dock_mm
        return out

    def _motion_counts(self) -> dict[str, Any]:
        return {"sent": len(self.motion_log.sent), "refused": len(self.motion_log.refused),
                "sent_without_passed_check": self.motion_log.unchecked, "refusals": self.motion_log.refused}

    def _run_step(self, step: Step) -> None:
        """One step, told to the recorder as it starts and ends (with the layers it changed)."""
        title = self._titles()[step]
        self._tell_recorder(lambda r: r.event(str(step), title, "running"))
        try:
            self.log.run(str(step), title, self._action(step))
        finally:
            rec = self.log.steps[-1]
            self._tell_recorder(lambda r: r.layers_from(self.record))
            self._tell_recorder(lambda r: r.event(str(step), title, str(rec.state), rec.error or _figures_line(rec)))

    def _tell_recorder(self, fn: Callable[[TwinRecorder], None]) -> None:
        """A fault in the recording (or a view attached to it) is reported, and never stops the procedure."""
        if self.recorder is None:
            return
        try:
            fn(self.recorder)
        except Exception as exc:  # noqa: BLE001
            self.log.meta.setdefault("twin_timeline_faults", []).append(f"{type(exc).__name__}: {exc}")

    # The state each step after the first needs; asking before the step that makes it is a bug, said plainly.
    @property
    def _reg(self) -> Registration:
        if self.reg is None:
            raise RehearsalError("the X-rays have not been taken yet: no registration")
        return self.reg

    @property
    def _planner(self) -> MotionPlanner:
        if self.planner is None:
            raise RehearsalError("the twin's collision world has not been built yet (survey)")
        return self.planner

    @property
    def _guarded(self) -> GuardedArm:
        if self.guarded is None:
            raise RehearsalError("the guarded arm has not been set up yet (survey)")
        return self.guarded

    @property
    def _cal(self) -> CalibrationSet:
        if self.cal is None:
            raise RehearsalError("no calibration yet")
        return self.cal

    @property
    def _the_plan(self) -> VertebraPlan:
        if self._reg.plan is None:
            raise RehearsalError("no plan yet")
        return self._reg.plan

    @property
    def _envelope(self) -> PatientEnvelope:
        if self._reg.envelope is None:
            raise RehearsalError("the patient envelope has not been surveyed yet")
        return self._reg.envelope

    @property
    def _clicks(self) -> Clicks:
        if self._reg.clicks is None:
            raise RehearsalError("no landmarks marked yet")
        return self._reg.clicks

    @property
    def _carm_calibration(self) -> CArmCalibrationResult:
        if self._cal.carm is None:
            raise CalibrationError("the calibration has no C-arm section: run `twinsim calibrate carm`")
        return self._cal.carm

    @property
    def _check_mm(self) -> float:
        return float(self.s.calibration_check_mm or self.tol.calibration_check_mm)

    @property
    def succeeded(self) -> bool:
        return self.log.outcome is Outcome.COMPLETED

    # ---- steps ---------------------------------------------------------------------------
    def _home(self, rec: StepRecord) -> dict[str, Any]:
        watch = Watch(self.dev.tracker, self._reg.T_cam_ref_mm)
        if self.q_start is None:
            raise RehearsalError("the calibration step has not run: no start pose to go back to")
        self._move(self._planner.plan("back to the start", self.dev.arm.read_joints_rad(), self.q_start), watch, rec)
        return {}

    def _calibrate(self, rec: StepRecord) -> dict[str, Any]:
        dev = self.dev
        self.q_start = dev.arm.read_joints_rad()
        if self.cal is None:
            cal = run_calibration(dev.arm, dev.tracker, dev.model, dev.operator, dev.registration,
                                  SessionSettings(seed=self.s.seed), progress=self.progress)
            if dev.carm_phantom is None:
                raise CalibrationError("the rig names no C-arm bead phantom, and the calibration has no C-arm section")
            cal.carm = calibrate_carm_with_phantom(dev.carm, dev.tracker, dev.carm_phantom, operator=dev.operator).result
            rec.outputs.append(str(save_calibration(cal, self.out / "calibration.json")))
            self.cal, source = cal, "measured now"
        else:
            source = "loaded"
        if self._cal.carm is None:
            raise CalibrationError("the calibration has no C-arm section: run `twinsim calibrate carm`")
        gap = self._guide_gap_mm()
        figures: dict[str, Any] = {"source": source}
        if gap > self._check_mm:
            # The cart is wheeled to each patient: the base may stand elsewhere than at calibration while the
            # tool calibrations (hand-eye, guide, pointer) still hold. Its flange marker says where it is now.
            moved = self._reregister_base(None)["base_moved_in_ref_mm"]
            gap_after = self._guide_gap_mm()
            if gap_after > self._check_mm:
                raise CalibrationError(f"the needle guide is seen {gap:.1f} mm from where the calibration and the joints put "
                                       f"it, {gap_after:.1f} mm with the base registered again from its flange marker (limit "
                                       f"{self.s.calibration_check_mm:g} mm): this calibration is not this room's; run `twinsim calibrate`")
            figures.update(cart_moved_since_calibration_mm=moved, guide_tip_before_base_registration_mm=gap)
            gap = gap_after
        return {**figures, "guide_tip_tracked_vs_joints_mm": gap}

    def _guide_gap_mm(self) -> float:
        state = TwinSync(self.dev.tracker, self.dev.arm, self.dev.model, self._cal).update()
        if NEEDLE_MARKER in state.missing:
            raise TrackingLost("cannot check the calibration against the room: the needle guide (or the patient reference) "
                               "is not tracked; clear the camera's line of sight to both")
        return float(np.linalg.norm(state.needle_tip_ref_mm - state.needle_tip_from_joints_ref_mm))

    def _xrays(self, rec: StepRecord) -> dict[str, Any]:
        dev = self.dev
        acqs, images = [], []
        for k, v in enumerate(self.s.views):
            acq = acquire_tracked(dev.carm, dev.tracker, self._carm_calibration, v, operator=dev.operator)
            stem = f"xray_{k}_{v.name.replace(' ', '')}"
            written = acq.save(self.out / "xrays", stem)
            rec.outputs += [str(p) for p in written]
            images.append(written[0])
            acqs.append(acq)
        T_cam_ref = ToolIndex(dev.tracker).pose(read_frames(dev.tracker, 20), REFERENCE)
        self.reg = Registration(T_cam_ref, acqs, images)
        dev.carm.park()  # out of the robot's way until the confirmation X-rays
        return {"views": [v.name for v in self.s.views],
                "carm_source_ref_mm": [np.linalg.inv(a.geometry.T_source_frame_mm)[:3, 3].round(1).tolist() for a in acqs]}

    def _landmarks(self, rec: StepRecord) -> dict[str, Any]:
        from twinsim.recon.consistency import ClickConsistencyError, check_clicks, files_of
        from twinsim.recon.fit import FitSettings, default_model_name
        from twinsim.recon.initialization import validate_inputs
        from twinsim.shape.model import load_model

        acqs = self._reg.acquisitions
        model = self._reg.model = load_model(default_model_name(self.level))
        sigma_mm = (self.s.fit_settings or FitSettings()).click_sigma_mm
        # A person told that the clicks disagree with the images marks them once more; a file cannot.
        attempts = 1 if self.s.clicks_file is not None else 2
        rejected: list[str] = []
        for attempt in range(attempts):
            if self.s.clicks_file is not None:
                clicks = load_clicks(self.s.clicks_file, n_views=len(acqs))
                source = str(self.s.clicks_file)
            else:
                clicks = Clicks(self.dev.operator.mark_landmarks(acqs, self.level, CLICKABLE), self.level)
                source = "marked by the operator"
            counts = [len(v) for v in clicks.views]
            common = set(clicks.views[0]) & set(clicks.views[1])
            backup = "body_centroid" in common and bool(common & {"superior_endplate_centre", "inferior_endplate_centre"})
            if len(common) < 3 and not backup:
                k = int(np.argmin(counts))
                raise RehearsalError(f"only {len(common)} landmark(s) are marked in both X-rays ({counts[k]} in view {k + 1}, "
                                     f"{self.s.views[k].name}); the reconstruction needs at least 3 in both, or the body "
                                     "centroid and an endplate centre: mark them again, or take that view again")
            validate_inputs(model, [a.geometry for a in acqs], clicks)
            try:
                check = check_clicks(model, [a.geometry for a in acqs], clicks, sigma_mm, files_of(acqs))
                break
            except ClickConsistencyError as exc:
                if attempt + 1 == attempts:
                    raise RehearsalError(f"the landmarks do not fit the X-rays: {exc}") from exc
                rejected.append(str(exc))
                self.dev.operator.say(f"the landmarks do not fit the X-rays ({exc}); marking them again")
        check.clicks.images = [p.name for p in self._reg.image_paths]
        self._reg.clicks, self._reg.click_check = check.clicks, check
        rec.outputs.append(str(check.clicks.save(self.out / "clicks.json")))
        return {"source": source, "landmarks": sorted(check.clicks.views[0]), "per_view": counts, "in_both": len(common),
                "input_check": check.correction or ("consistent" if check.checked else "too few landmarks to check"),
                "worst_click_sd": check.worst_sd, "marked_again_after": rejected}

    def _reconstruct(self, rec: StepRecord) -> dict[str, Any]:
        from twinsim.recon.consistency import initial_pose_from
        from twinsim.recon.fit import FitSettings, reconstruct, save_reconstruction

        model = self._reg.model
        acqs = self._reg.acquisitions
        # The landmarks step checked (and maybe corrected) the clicks: the fit starts from that, and records it.
        init = initial_pose_from(model, acqs, self._reg.click_check) if self._reg.click_check is not None else None
        r = reconstruct(model, acqs, self._clicks, self.s.fit_settings or FitSettings(), progress=bool(self.progress),
                        init=init)
        self._reg.reconstruction = r
        rec.outputs.append(str(save_reconstruction(self.out / f"{self.level}_reconstruction.json", r, self.level,
                                                   self._reg.image_paths)))
        return {"model": model.name, "loss": r.loss, "initial_loss": r.initial_loss, "runs": r.runs,
                "landmark_rms_sigma": r.landmark_rms_sigma, "fit_s": r.wall_s}

    def _plan(self, rec: StepRecord) -> dict[str, Any]:
        from twinsim.planning.picture import write_plan_picture
        from twinsim.planning.plan_file import save_plan

        r = self._reg.reconstruction
        marks = self._reg.model.annotation_points(r.vertices_mm)
        self._reg.landmarks = marks
        plan = (self.plan_source(self.record) if self.plan_source is not None
                else plan_vertebra(r.vertices_mm, r.faces, marks, self.s.plan, frame=r.frame))
        self._reg.plan = plan
        rec.outputs.append(str(save_plan(self.out / f"{self.level}_plan.json", plan, self.level, {"procedure": "rehearsal"})))
        rec.outputs.append(str(write_plan_picture(self.out / f"{self.level}_plan.png", plan, r.vertices_mm, r.faces, marks,
                                                  self._reg.acquisitions,
                                                  title=f"{self.level} plan on the reconstruction (frame {r.frame})")))
        figures = {side: {"min_clearance_mm": p.min_clearance_mm, "length_mm": p.length_mm, "safe": bool(p.safe),
                          "reasons": list(p.reasons)} for side, p in plan.paths.items()}
        if not plan.safe:
            raise RehearsalError("the plan is refused: " + "; ".join(f"{s}: {', '.join(p.reasons)}" for s, p in plan.paths.items()
                                                                     if not p.safe))
        return {"paths": figures, "convergence_deg": plan.convergence_deg}

    def _touches(self, surface: str, n: int) -> np.ndarray:
        idx = ToolIndex(self.dev.tracker)
        pts = []
        for _ in self.dev.operator.trace_surface(surface, n):
            try:
                T = idx.pose_in(read_frames(self.dev.tracker, self.s.frames_per_touch), POINTER, REFERENCE)
                pts.append(frames.transform_points(T, self._cal.pointer_tip_mm))
            except TrackingLost:
                continue  # an occluded touch is dropped; the models check they have enough
        return np.array(pts).reshape(-1, 3)

    def _survey(self, rec: StepRecord) -> dict[str, Any]:
        dev, m = self.dev, self.dev.room_model
        up = self._cal.T_ref_base[:3, 2]  # the robot stands upright on the floor
        floor = self._cal.T_ref_base[:3, 3] - up * m.base_height_m["operation"] * 1000.0
        marks = self._reg.landmarks
        superior = marks["superior_endplate_centre"] - marks["inferior_endplate_centre"]
        skin = self._touches("skin", self.s.skin_points or self.tol.skin_touches)
        table = TableModel.under_patient(skin, floor, up, superior, m.table_top_height_m * 1000.0, m.table_width_m * 1000.0,
                                         m.table_length_m * 1000.0)
        envelope = PatientEnvelope.from_touches(skin, table)
        self._reg.table, self._reg.envelope = table, envelope
        if self.world is not None:
            self.world.close()
        world = TwinWorld(m, self._cal.T_ref_base, table, self.s.clearance)
        grown = envelope.padded(self.tol.envelope_padding_mm)
        world.set_envelope(grown, grown.continuations(table, self.tol.envelope_continuation_mm, self.tol.envelope_flank_mm))
        world.park_carm()  # rolled away after the X-rays
        nav = "not modelled (the rig has no navigation arm)"
        if dev.navigation is not None:
            from twinsim.robot.nominal import NominalPanda

            with NominalPanda(m.tracker_camera) as cam_model:
                q_nav = dev.navigation.read_joints_rad()
                T_base_cam = cam_model.fk_m(q_nav, panda.CAMERA_LINK)
            world.set_navigation(frames.invert(self._reg.T_cam_ref_mm), q_nav, T_base_cam)
            nav = "from the tracker and its joint readings"
        self.world, self._twin_open = world, True
        self.planner = MotionPlanner(world, dev.model, self._cal.T_flange_tool, self.s.speed_factor, seed=self.s.seed)
        self.guarded = GuardedArm(dev.arm, world, self.motion_log)
        # The check's speed on this twin: a 200-waypoint trajectory from where the robot stands (median of 5).
        q = dev.arm.read_joints_rad()
        traj = list(np.linspace(q, q + np.r_[0.5, 0.2, 0.0, 0.3, 0.0, 0.2, 0.0] * (1 if q[0] < 0 else -1), 200))
        probe = [world.check_path(traj) for _ in range(5)]
        return {"skin_touches_used": envelope.touches, "table_top_above_floor_mm": table.top_height_mm,
                "envelope_vertices": len(envelope.vertices_ref_mm), "navigation_robot": nav, "twin_bodies": world.bodies,
                "check_200_waypoints": {"configurations": probe[0].configurations, "passed": probe[0].ok,
                                        "median_ms": float(np.median([p.seconds for p in probe]) * 1000.0),
                                        "bodies": len(world.bodies) + 1}}

    def _reach(self, rec: StepRecord) -> dict[str, Any]:
        plan = self._the_plan
        q_now = self.dev.arm.read_joints_rad()
        # From here every motion keeps the guide's marker in the tracker's view in the twin, as the interlock will ask.
        self._planner.sight = self._sight_line()
        self.docks, problems = {}, {}
        for side in SIDES:
            p = plan.paths[side]
            try:
                self.docks[side] = plan_dock(self._planner, side, p.entry_mm, p.target_mm, self._envelope, [q_now],
                                             self.s.dock, self._planner.sight)
            except Unreachable as exc:
                problems[side] = exc.reason
        if problems:
            paths = {s: (plan.paths[s].entry_mm, plan.paths[s].target_mm) for s in SIDES}
            sources = [np.linalg.inv(a.geometry.T_source_frame_mm) for a in self._reg.acquisitions]
            best, tried = search_placement(self._planner, paths, self._envelope, sources, [q_now], self.s.placement, self.s.dock)
            self.recommendation = best
            self.log.recommendation = {"why": problems, "candidates_tried": tried,
                                       **(best.summary() if best else {"advice": "no placement tried reaches both paths"})}
            raise Unreachable("guide placement", "; ".join(f"{s} path: {w}" for s, w in problems.items())
                              + f". Recommendation: {best.describe() if best else 'none of ' + str(tried) + ' placements works'}")
        self.log.recommendation = {"advice": "the robot stands where both paths are reachable",
                                   "limit_margin_rad": min(d.limit_margin_rad for d in self.docks.values())}
        return {side: d.summary() for side, d in self.docks.items()}

    def _sight_line(self) -> SightLine | None:
        """The guide's marker in the tool frame (tracked vs joints), its spheres and the camera in ``ref``: what the
        twin's line-of-sight checks need (None when the guide is not tracked here)."""
        f = read_frames(self.dev.tracker, 10)
        try:
            T_ref_marker = ToolIndex(self.dev.tracker).pose_in(f, NEEDLE_MARKER, REFERENCE)
        except TrackingLost:
            return None
        try:
            spheres = load_marker(NEEDLE_MARKER).spheres_mm
        except MarkerError:  # no tool definition here: one ray from the marker's origin
            spheres = None
        try:
            reference = load_marker(REFERENCE).spheres_mm  # ref is the reference marker's own frame
        except MarkerError:
            reference = None
        T_ref_tool = self._planner.tool_pose_mm(self.dev.arm.read_joints_rad())
        return SightLine(frames.invert(T_ref_tool) @ T_ref_marker, frames.invert(self._reg.T_cam_ref_mm), spheres,
                         max_blind_frames=self.tol.max_blind_frames, rim_mm=self.tol.sight_rim_mm,
                         reference_spheres_ref_mm=reference)

    def _move(self, motion: PlannedMotion, watch: Watch, rec: StepRecord) -> None:
        # The people at the rig let each checked motion go (a person presses Enter or Done; the simulated team at once).
        self.dev.operator.approve_motion(f"{motion.name} ({motion.method}, {motion.timing.duration_s:.1f} s)")
        frames_read = run_watched(self._guarded, motion.waypoints_rad[1:], watch, self.s.speed_factor, motion.name)
        rec.figures.setdefault("motions", []).append({**motion.summary(), "tracker_frames_during": frames_read})

    def _place(self, side: str, rec: StepRecord) -> dict[str, Any]:
        dev, dock, planner = self.dev, self.docks[side], self._planner
        watch = Watch(dev.tracker, self._reg.T_cam_ref_mm)
        watch.check_reference(read_frames(dev.tracker, 10), f"before the {side} guide")
        motions = [planner.plan(f"{side}: to the approach pose", dev.arm.read_joints_rad(), dock.q_approach_rad)]
        self._move(motions[-1], watch, rec)
        motions.append(planner.plan_line(f"{side}: advance along the axis", dev.arm.read_joints_rad(), dock.T_approach_mm,
                                         dock.T_dock_mm))
        self._move(motions[-1], watch, rec)
        watch.check_reference(read_frames(dev.tracker, 10), f"at the {side} dock")
        sync = TwinSync(dev.tracker, self._guarded, dev.model, self._cal)
        res = sync.move_tool(dock.T_dock_mm, closed_loop=True)
        p = self._the_plan.paths[side]
        placed = GuidePlacement(side, dock, motions, res.measured_ref_mm[-1], res.measured_axis_ref[-1], res.iterations,
                                res.converged, p.entry_mm, p.target_mm)
        if self.verify is not None:
            placed.truth = self.verify.guide(self.record, placed)
        self.placed[side] = placed
        figures: dict[str, Any] = {"tracked_tip_error_mm": res.measured_error_mm[-1], "tracked_axis_error_deg": res.measured_axis_error_deg[-1],
                   "closed_loop_iterations": res.iterations, "converged": res.converged, "insertion_mm": dock.insertion_mm}
        if placed.truth is not None:
            figures["truth"] = placed.truth
        # Back out along the axis, so the next motion starts clear of the patient.
        motions.append(planner.plan_line(f"{side}: back out along the axis", dev.arm.read_joints_rad(), dock.T_dock_mm,
                                         dock.T_approach_mm))
        self._move(motions[-1], watch, rec)
        figures["retreat"] = self._retreat(side, dock, watch, rec)
        return figures

    def _retreat(self, side: str, dock: DockPlan, watch: Watch, rec: StepRecord) -> str:
        """On along the axis, ``retreat_mm`` past the approach pose where the arm can: the transit that follows
        starts high over the back. The twin knows the patient only where the pointer touched; a transit from
        the approach pose swings the guide low over the untouched side of the back."""
        if self.tol.retreat_mm <= 0:
            return "none asked for"
        out = dock.T_approach_mm[:3, 3] - dock.T_dock_mm[:3, 3]
        T = dock.T_approach_mm.copy()
        T[:3, 3] += out / np.linalg.norm(out) * self.tol.retreat_mm
        try:
            motion = self._planner.plan_line(f"{side}: retreat along the axis", self.dev.arm.read_joints_rad(),
                                             dock.T_approach_mm, T)
        except MotionRefused as exc:  # refused before any motion: the transit starts from the approach pose
            return f"from the approach pose: the retreat is refused ({exc})"
        self._move(motion, watch, rec)
        return f"{self.tol.retreat_mm:g} mm past the approach pose"

    def _reregister_base(self, rec: StepRecord | None) -> dict[str, Any]:
        """The robot's base in the moved reference, from its flange marker at one pose (hand-eye kept)."""
        dev = self.dev
        f = read_frames(dev.tracker, 30)
        T_ref_fm = ToolIndex(dev.tracker).pose_in(f, OPERATION_FLANGE, REFERENCE)
        T_base_flange = frames.scale_translation(dev.model.fk_m(dev.arm.read_joints_rad(), panda.FLANGE_LINK), 1000.0)
        old = self._cal.T_ref_base.copy()
        self.cal = replace(self._cal, T_ref_base=T_ref_fm @ frames.invert(self._cal.T_flange_marker) @ frames.invert(T_base_flange))
        return {"base_moved_in_ref_mm": float(np.linalg.norm(self._cal.T_ref_base[:3, 3] - old[:3, 3]))}

    def _verification(self, rec: StepRecord) -> dict[str, Any]:
        if self.verify is None:
            raise RehearsalError("verification needs a verifier (simulation only)")
        figures = self.verify.confirm(self.record, self.out)
        rec.outputs += figures.pop("outputs", [])
        return {"per_guide": {side: g.truth for side, g in self.placed.items()}, **figures}


def _figures_line(rec: StepRecord) -> str:
    from twinsim.procedure.report_page import step_figures

    try:
        return step_figures(rec)
    except (KeyError, TypeError, ValueError):  # a step's figures without the usual keys: the view shows none
        return ""
