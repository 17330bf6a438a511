"""The scene file's schema (pydantic): types, ranges, and no unknown or misspelt keys.

:func:`twinsim.sim.scene_config.load_scene_config` validates a file against it and turns the
result into the scene dataclasses the room is built from.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _vector(n: int, positive: bool = False) -> Any:
    def check(v: Any) -> list[float]:
        ok = isinstance(v, list | tuple) and len(v) == n and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        if not ok:
            raise ValueError(f"must be a list of {n} numbers, got {v!r}")
        if positive and any(x <= 0 for x in v):
            raise ValueError(f"must be all > 0, got {v!r}")
        return [float(x) for x in v]

    return Annotated[list[float], BeforeValidator(check)]


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"must be a number, got {v!r}")
    return float(v)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError(f"must be > 0, got {v}")
    return v


def _non_negative(v: float) -> float:
    if v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


Number = Annotated[float, BeforeValidator(_number)]
Positive = Annotated[float, BeforeValidator(_number), AfterValidator(_positive)]
NonNegative = Annotated[float, BeforeValidator(_number), AfterValidator(_non_negative)]
Vec2, Vec3, Vec7 = _vector(2), _vector(3), _vector(7)
PosVec2, PosVec3 = _vector(2, True), _vector(3, True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientFiles(_Strict):
    ct: str
    labels: str
    label_table: str | None = None


class Patient(_Strict):
    source: Literal["example"] | PatientFiles
    target_level: str
    position: Literal["prone"]
    head_toward: Literal["+x", "-x"]
    target_xy_m: Vec2
    table_gap_m: Number = 0.0


class Table(_Strict):
    top_size_m: PosVec3
    top_center_xy_m: Vec2
    top_height_m: Positive
    column_size_m: PosVec2
    column_x_m: Number


class KinematicErrors(_Strict):
    seed: int = 0
    link_offset_sd_mm: NonNegative = 0.0
    link_angle_sd_deg: NonNegative = 0.0
    joint_zero_sd_deg: NonNegative = 0.0
    repeatability_mm: NonNegative = 0.0

    @model_validator(mode="after")
    def _plausible(self) -> KinematicErrors:
        if self.link_offset_sd_mm > 20 or self.link_angle_sd_deg > 2 or self.joint_zero_sd_deg > 2:
            raise ValueError(f"holds errors far beyond any real arm ({self.model_dump()}); lengths are mm and angles degrees")
        return self


class Robot(_Strict):
    base_xyz_m: Vec3
    base_rpy_deg: Vec3
    cart_size_m: PosVec2
    home_q_rad: Vec7
    tool: Literal["needle_guide", "tracker_camera"]
    kinematic_errors: KinematicErrors = KinematicErrors()


class Robots(_Strict):
    operation: Robot
    navigation: Robot


class NeedleGuide(_Strict):
    adapter_length_m: Positive
    adapter_diameter_m: Positive
    tube_length_m: Positive
    tube_outer_diameter_m: Positive
    channel_diameter_m: Positive
    mass_kg: Positive

    @model_validator(mode="after")
    def _channel_fits(self) -> NeedleGuide:
        if self.channel_diameter_m >= self.tube_outer_diameter_m:
            raise ValueError("channel_diameter_m must be smaller than tube_outer_diameter_m")
        return self


class TrackerCamera(_Strict):
    model: str
    size_m: PosVec3
    mount_offset_m: Number
    mass_kg: Positive


class CArm(_Strict):
    sdd_mm: Positive
    sid_mm: Positive
    detector_size_mm: PosVec2
    pixel_spacing_mm: Positive
    isocenter: Literal["target"] | Vec3
    lao_deg: Number = 0.0
    cranial_deg: Number = 0.0
    arc_radius_m: Positive
    arc_side: Literal["left", "right"]
    arc_width_m: Positive
    arc_thickness_m: Positive
    arc_segments: Annotated[int, Field(gt=0)] = 16
    source_housing_m: PosVec3
    focal_spot_depth_m: Positive
    detector_housing_m: PosVec3
    # The bead phantom's shots: in the empty beam before the patient is slid in (as a clinic calibrates),
    # or over the patient (beads found over any anatomy; a heavy patient can hide some).
    calibration_shots: Literal["empty_beam", "over_patient"] = "empty_beam"


class Physics(_Strict):
    timestep_s: Positive
    gravity_m_s2: Vec3


class View(_Strict):
    name: str
    target_m: Vec3
    distance_m: Positive
    yaw_deg: Number
    pitch_deg: Number


class Snapshot(_Strict):
    image_size: PosVec2
    views: list[View]


class Mount(_Strict):
    attach: str
    offset_m: Vec3 = [0.0, 0.0, 0.0]
    level: str | None = None  # attach: patient
    clear_of_skin_m: NonNegative | None = None  # attach: patient: the marker at least this far above the skin (default 0.08)
    link: str | None = None  # attach: a robot
    tip_mm: Vec3 | None = None  # the pointer's tip in its marker frame (simulated truth)


class TrackerErrors(_Strict):
    jitter_rms_mm: NonNegative = 0.05
    systematic_rms_mm: NonNegative = 0.11
    systematic_length_mm: Positive = 400.0
    latency_s: NonNegative = 0.0142


class NeedleGuideMount(_Strict):
    tilt_deg: NonNegative = 0.0
    offset_mm: NonNegative = 0.0


class ErrorBudget(_Strict):
    enabled: bool = True
    seed: int = 0
    tracker: TrackerErrors = TrackerErrors()
    marker_sphere_sd_mm: NonNegative = 0.0
    needle_guide_mount: NeedleGuideMount = NeedleGuideMount()
    carm_calibration: Literal["calibrated", "true"] = "calibrated"

    @model_validator(mode="after")
    def _plausible(self) -> ErrorBudget:
        t = self.tracker
        if max(t.jitter_rms_mm, t.systematic_rms_mm, self.marker_sphere_sd_mm, self.needle_guide_mount.offset_mm) > 5 \
                or self.needle_guide_mount.tilt_deg > 5 or t.latency_s > 1:
            raise ValueError("holds errors far beyond a working rig; lengths are mm, angles degrees, latency seconds")
        return self


class Procedure(_Strict):
    calibration_check_mm: Positive = 3.0
    skin_touches: Annotated[int, Field(ge=8)] = 40
    dock_standoff_mm: Positive = 15.0
    approach_mm: Annotated[list[Positive], Field(min_length=1)] = [30.0, 15.0, 5.0]
    robot_clearance_mm: NonNegative = 15.0
    guide_to_patient_mm: NonNegative = 4.0
    sight_rim_mm: NonNegative = 6.0
    max_blind_frames: Annotated[int, Field(ge=0)] = 2
    envelope_continuation_mm: NonNegative = 300.0
    envelope_flank_mm: NonNegative = 100.0
    envelope_padding_mm: NonNegative = 5.0
    retreat_mm: NonNegative = 100.0


class Scene(_Strict):
    name: str
    patient: Patient
    table: Table
    robots: Robots
    needle_guide: NeedleGuide
    tracker_camera: TrackerCamera
    carm: CArm
    physics: Physics
    snapshot: Snapshot
    markers: dict[str, Mount] = {}
    error_budget: ErrorBudget = ErrorBudget(enabled=False)
    procedure: Procedure = Procedure()
