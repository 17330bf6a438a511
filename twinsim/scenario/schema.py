"""Scenario files (``scenarios/*.yaml``, ``twinsim-scenario/1``): a scripted rehearsal, its faults and what must come of it.

Validated with pydantic like the rig files: an unknown or misspelt key is an error, and so is
a fault of an unknown kind, a trigger that names no step of the procedure, or an expectation
that cannot be judged (a stop without the step it should stop at). Relative paths are relative
to the scenario file. Lengths are mm unless a key says ``_m``; angles degrees; times seconds of
simulated time (a tracker frame is 1/60 s; a reconstruction takes none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twinsim.errors import TwinsimError
from twinsim.procedure.steps import Step
from twinsim.report import read_yaml_mapping, validation_problems
from twinsim.tracking.tools import TRACKED_TOOLS

SCENARIO_FORMAT = "twinsim-scenario/1"
# The procedure's steps, in order: what a trigger or an expected stop may name.
STEPS = tuple(str(s) for s in Step)


class ScenarioFileError(TwinsimError, ValueError):
    """A scenario file is missing, malformed, or holds an unknown or misspelt key."""


def _one_of(v: str, allowed: tuple[str, ...], what: str, known: str) -> str:
    if v not in allowed:
        raise ValueError(f"unknown {what} {v!r}; {known} {list(allowed)}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtStep(_Strict):
    """``after_s`` seconds of simulated time after the step starts (``when: start``) or as it ends."""

    step: str
    when: Literal["start", "end"] = "start"
    after_s: Annotated[float, Field(ge=0.0)] = 0.0

    @field_validator("step")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of(v, STEPS, "step", "the procedure's steps are")


class AtTime(_Strict):
    time_s: Annotated[float, Field(ge=0.0)]  # simulated seconds since the scenario (or the episode) started


Trigger = AtStep | AtTime


class Occlusion(_Strict):
    """Something (a hand, a drape, a nurse) in the line of sight between the camera and one tool."""

    kind: Literal["occlusion"]
    tool: str
    at: Trigger
    duration_s: Annotated[float, Field(gt=0.0)]
    size_m: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2  # the occluder's width
    fraction: Annotated[float, Field(gt=0.05, lt=0.95)] = 0.5  # where on the line of sight, camera 0 to tool 1

    @field_validator("tool")
    @classmethod
    def _tool(cls, v: str) -> str:
        return _one_of(v, TRACKED_TOOLS, "tool", "tracked tools are")


class PatientShift(_Strict):
    """The patient moves rigidly (a bump, a cough): the reference clamped to the spine moves with the bone."""

    kind: Literal["patient_shift"]
    at: Trigger
    shift_mm: tuple[float, float, float]
    turn_deg: float = 0.0  # about the world's vertical, through the target vertebra


class Breathing(_Strict):
    """Periodic motion of the patient along ``axis`` (world; prone: vertical), ``amplitude_mm`` peak."""

    kind: Literal["breathing"]
    at: Trigger = AtTime(time_s=0.0)
    amplitude_mm: Annotated[float, Field(gt=0.0, le=30.0)]
    period_s: Annotated[float, Field(gt=0.5, le=30.0)] = 4.0
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)


class CollidingView(_Strict):
    """The X-ray view at ``index`` asked for where the C-arm would touch something in the room."""

    kind: Literal["colliding_view"]
    view: str
    index: Literal[0, 1] = 1


class UnreachableTarget(_Strict):
    """The robot's cart stands away from where it was calibrated, so far that the paths are out of its reach."""

    kind: Literal["unreachable_target"]
    cart_shift_m: tuple[float, float]  # world x, y
    cart_turn_deg: float = 0.0


class RobotReflex(_Strict):
    """The robot trips a reflex of its own (a push on a link, a cable caught), wherever it is."""

    kind: Literal["robot_reflex"]
    at: Trigger
    why: str = "external force on link 4"


class DamagedXray(_Strict):
    """Exposure number ``exposure`` (0 is the first) arrives as a damaged file."""

    kind: Literal["damaged_xray"]
    exposure: Annotated[int, Field(ge=0)] = 1
    damage: Literal["truncated", "wrong_size", "blank"] = "truncated"


class MissingLandmarks(_Strict):
    """The clinician cannot find ``names`` (all when omitted) in view ``view`` (0 or 1)."""

    kind: Literal["missing_landmarks"]
    view: Literal[0, 1] = 1
    names: list[str] | None = None


class TrackerSilent(_Strict):
    """The tracker stops answering (cable, network, power) and does not come back."""

    kind: Literal["tracker_silent"]
    at: Trigger


Fault = Annotated[Occlusion | PatientShift | Breathing | CollidingView | UnreachableTarget | RobotReflex | DamagedXray
                  | MissingLandmarks | TrackerSilent, Field(discriminator="kind")]
FAULT_KINDS = ("occlusion", "patient_shift", "breathing", "colliding_view", "unreachable_target", "robot_reflex",
               "damaged_xray", "missing_landmarks", "tracker_silent")


class Expectation(_Strict):
    """``completed``: both guides placed, within the bounds given; ``stopped``: at ``step``, for ``reason``.

    ``reason`` is the error's type (``TrackingLostDuringMotion``) or words its message holds.
    """

    outcome: Literal["completed", "stopped"]
    step: str | None = None
    reason: str | None = None
    tip_error_mm_max: Annotated[float, Field(gt=0.0)] | None = None
    axis_error_deg_max: Annotated[float, Field(gt=0.0)] | None = None
    no_breach: bool = True
    reregistrations: Annotated[int, Field(ge=0)] | None = None
    recommendation: bool | None = None  # a placement recommendation in the report

    @model_validator(mode="after")
    def _judgeable(self) -> Expectation:
        if self.outcome == "stopped" and (self.step is None or self.reason is None):
            raise ValueError("a stop is expected: say at which 'step' and for which 'reason'")
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}; the procedure's steps are {list(STEPS)}")
        if self.outcome == "stopped" and (self.tip_error_mm_max or self.axis_error_deg_max):
            raise ValueError("accuracy bounds belong to a completed outcome")
        return self


class FitOverride(_Strict):
    """A cheaper reconstruction for scenarios about something else (iterations per stage, restarts)."""

    iterations: tuple[int, int, int]
    restarts: Annotated[int, Field(ge=0)] = 0


class PlanOverride(_Strict):
    """The instrument and the planner's margin, where the rehearsal differs from the planner's defaults."""

    cannula_diameter_mm: Annotated[float, Field(gt=0.0, le=10.0)] | None = None  # None: 5 mm (seed 000's cylinder)
    margin_mm: Annotated[float, Field(ge=0.0, le=5.0)] | None = None  # clearance beyond the radius; None: 0


class Scenario(_Strict):
    format: Literal["twinsim-scenario/1"]
    name: str
    description: str = ""
    rig: Path | None = None  # a simulated rig file; None: hardware/sim.yaml
    scene: Path | None = None  # the room and its patient; None: the rig's
    level: str | None = None  # None: the scene's target level
    views: tuple[str, str] = ("AP", "RAO60")
    click_noise_mm: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0  # the clinician's clicks, SD per axis at the vertebra
    seed: int = 0
    ci: bool = False  # run in CI (see README: the fast ones)
    reconstruction: FitOverride | None = None
    plan: PlanOverride | None = None
    faults: list[Fault] = Field(default_factory=list)
    expect: Expectation
    path: Path | None = None  # where it was read from (set by load_scenario)

    @field_validator("level")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return v.upper() if v else v


class _ScenarioFile(_Strict):
    scenario: Scenario


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    data = read_yaml_mapping(path, ScenarioFileError, "scenario file", f"format: {SCENARIO_FORMAT}, name, faults, expect, ...")
    if "path" in data:
        raise ScenarioFileError(f"{path}: 'path' is not a key of a scenario file")
    try:
        sc = _ScenarioFile(scenario=data).scenario
    except ValidationError as exc:
        raise ScenarioFileError(f"{path}: {validation_problems(exc, skip=1)}") from None
    base = path.resolve().parent
    resolved = {k: (p if p.is_absolute() else (base / p).resolve()) for k in ("rig", "scene")
                if (p := getattr(sc, k)) is not None}
    for k, p in resolved.items():
        if not p.is_file():
            raise ScenarioFileError(f"{path}: {k} file not found: {p}")
    return sc.model_copy(update={**resolved, "path": path.resolve()})
