"""The scene file: every pose and dimension of the operating room, read and checked here (schema: ``scene_schema``).

A scene is a YAML file in ``scenarios/rooms/``. Lengths are metres and angles degrees unless a key
says otherwise (``_rad``, ``_mm``). Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from twinsim.errors import TwinsimError
from twinsim.imaging.carm_geometry import CArmGeometry
from twinsim.paths import bundled
from twinsim.report import read_yaml_mapping, validation_problems
from twinsim.robot.tools import KinematicErrorConfig, NeedleGuideConfig, TrackerCameraConfig  # noqa: F401 (part of the scene)
from twinsim.sim import scene_schema as schema

SCENARIOS_DIR = bundled("scenarios")
DEFAULT_SCENE = SCENARIOS_DIR / "rooms" / "default.yaml"


class SceneConfigError(TwinsimError, ValueError):
    """The scene file is missing, malformed, or holds an impossible value."""


@dataclass
class PatientConfig:
    source: str  # "example" or "files"
    ct: Path | None
    labels: Path | None
    label_table: Path | None
    target_level: str
    position: str  # prone
    head_toward: str  # "+x", "-x"
    target_xy_m: np.ndarray
    table_gap_m: float


@dataclass
class TableConfig:
    top_size_m: np.ndarray
    top_center_xy_m: np.ndarray
    top_height_m: float
    column_size_m: np.ndarray  # footprint x, y
    column_x_m: float


@dataclass
class RobotConfig:
    name: str
    base_xyz_m: np.ndarray
    base_rpy_deg: np.ndarray
    cart_size_m: np.ndarray  # footprint x, y; the cart reaches from the floor to the base
    home_q_rad: np.ndarray
    tool: str
    kinematic_errors: KinematicErrorConfig = field(default_factory=KinematicErrorConfig)


@dataclass
class CArmConfig:
    geometry: CArmGeometry
    isocenter: str | np.ndarray  # "target" or a world point, metres
    lao_deg: float
    cranial_deg: float
    arc_radius_m: float
    arc_side: str  # patient side the C's arc passes: "left" or "right"
    arc_width_m: float
    arc_thickness_m: float
    arc_segments: int
    source_housing_m: np.ndarray
    focal_spot_depth_m: float  # focal spot below the housing's patient-facing face
    detector_housing_m: np.ndarray
    calibration_shots: str = "empty_beam"  # the bead phantom's shots: "empty_beam" (before the patient) or "over_patient"


@dataclass
class ViewConfig:
    name: str
    target_m: np.ndarray
    distance_m: float
    yaw_deg: float
    pitch_deg: float


BUDGET_TERMS = ("tracker_systematic", "marker_tolerance", "needle_guide_mount", "carm_calibration", "latency")
SPEC_RMS_MM = 0.12  # what the tracker's error is with the budget off: its specification as white noise alone


@dataclass(frozen=True)
class ErrorBudgetConfig:
    """What stands between the room and what the sensors say of it (see the scene file's ``error_budget``).

    ``terms`` are those switched on; with none, the tracker's error is its specified RMS as
    white noise per frame (averaging removes it), markers are as defined, the guide's bore is
    the flange axis, the C-arm's true parameters stand in for its calibration and frames
    arrive at once.
    """

    terms: frozenset[str]
    seed: int = 0
    jitter_rms_mm: float = 0.05
    systematic_rms_mm: float = 0.11
    systematic_length_mm: float = 400.0
    latency_s: float = 0.0142
    marker_sphere_sd_mm: float = 0.0
    needle_guide_tilt_deg: float = 0.0
    needle_guide_offset_mm: float = 0.0
    carm_true_parameters: bool = False

    def only(self, terms: set[str] | frozenset[str] | tuple[str, ...]) -> ErrorBudgetConfig:
        unknown = sorted(set(terms) - set(BUDGET_TERMS))
        if unknown:
            raise SceneConfigError(f"unknown error-budget terms {unknown}; known: {', '.join(BUDGET_TERMS)}")
        return replace(self, terms=frozenset(terms))

    def tracker_configuration(self) -> dict[str, float | int]:
        """The simulated Vega's keys for the terms that are on."""
        systematic = "tracker_systematic" in self.terms
        return {"noise rms mm": self.jitter_rms_mm if systematic else SPEC_RMS_MM,
                "systematic rms mm": self.systematic_rms_mm if systematic else 0.0,
                "systematic length mm": self.systematic_length_mm, "systematic seed": self.seed,
                "latency s": self.latency_s if "latency" in self.terms else 0.0}

    @property
    def sphere_sd_mm(self) -> float:
        return self.marker_sphere_sd_mm if "marker_tolerance" in self.terms else 0.0

    @property
    def guide_mount(self) -> tuple[float, float]:
        """(tilt deg, lateral offset mm) of the needle guide's bore against the flange axis, as mounted."""
        on = "needle_guide_mount" in self.terms
        return (self.needle_guide_tilt_deg, self.needle_guide_offset_mm) if on else (0.0, 0.0)

    @property
    def carm_uses_truth(self) -> bool:
        return self.carm_true_parameters or "carm_calibration" not in self.terms


@dataclass
class SceneConfig:
    name: str
    path: Path
    patient: PatientConfig
    table: TableConfig
    robots: dict[str, RobotConfig]
    needle_guide: NeedleGuideConfig
    tracker_camera: TrackerCameraConfig
    carm: CArmConfig
    timestep_s: float
    gravity_m_s2: np.ndarray
    image_size: tuple[int, int]
    views: list[ViewConfig] = field(default_factory=list)
    markers: dict[str, dict] = field(default_factory=dict)  # tool name -> mount (see scenarios/rooms/default.yaml)
    error_budget: ErrorBudgetConfig = field(default_factory=lambda: ErrorBudgetConfig(frozenset()))
    # The scene's `procedure` section, validated: the procedure's tolerances (twinsim.procedure.tolerances), handed
    # to the twin's side by the rig wiring; the room itself does not use them.
    procedure: dict[str, Any] = field(default_factory=dict)


def _path(value: str | None, base: Path) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def load_scene_config(path: str | Path | None = None) -> SceneConfig:
    path = Path(path) if path else DEFAULT_SCENE
    src = str(path)
    data = read_yaml_mapping(path, SceneConfigError, "scene file", "name, patient, table, robots, ...")
    try:
        sc = schema.Scene.model_validate(data)
    except ValidationError as exc:
        raise SceneConfigError(f"{src}: {validation_problems(exc)}") from None

    pc = sc.patient
    if pc.source == "example":
        kind, ct, labels, table = "example", None, None, None
    else:
        kind = "files"
        ct, labels, table = (_path(pc.source.ct, path.parent), _path(pc.source.labels, path.parent),
                             _path(pc.source.label_table, path.parent))
    patient = PatientConfig(source=kind, ct=ct, labels=labels, label_table=table, target_level=pc.target_level,
                            position=pc.position, head_toward=pc.head_toward, target_xy_m=np.array(pc.target_xy_m),
                            table_gap_m=pc.table_gap_m)
    t = sc.table
    table_cfg = TableConfig(top_size_m=np.array(t.top_size_m), top_center_xy_m=np.array(t.top_center_xy_m),
                            top_height_m=t.top_height_m, column_size_m=np.array(t.column_size_m), column_x_m=t.column_x_m)
    robots = {}
    for name in ("operation", "navigation"):
        rb = getattr(sc.robots, name)
        robots[name] = RobotConfig(name=name, base_xyz_m=np.array(rb.base_xyz_m), base_rpy_deg=np.array(rb.base_rpy_deg),
                                   cart_size_m=np.array(rb.cart_size_m), home_q_rad=np.array(rb.home_q_rad), tool=rb.tool,
                                   kinematic_errors=KinematicErrorConfig(**rb.kinematic_errors.model_dump()))
    needle = NeedleGuideConfig(**sc.needle_guide.model_dump())
    tc = sc.tracker_camera
    camera = TrackerCameraConfig(model=tc.model, size_m=np.array(tc.size_m), mount_offset_m=tc.mount_offset_m, mass_kg=tc.mass_kg)
    c = sc.carm
    try:
        geom = CArmGeometry(sdd_mm=c.sdd_mm, sid_mm=c.sid_mm, detector_size_mm=tuple(c.detector_size_mm),
                            pixel_spacing_mm=c.pixel_spacing_mm)
    except ValueError as exc:
        raise SceneConfigError(f"{src}: carm: {exc}") from exc
    carm = CArmConfig(
        geometry=geom, isocenter="target" if c.isocenter == "target" else np.array(c.isocenter),
        lao_deg=c.lao_deg, cranial_deg=c.cranial_deg, arc_radius_m=c.arc_radius_m, arc_side=c.arc_side,
        arc_width_m=c.arc_width_m, arc_thickness_m=c.arc_thickness_m, arc_segments=c.arc_segments,
        source_housing_m=np.array(c.source_housing_m), focal_spot_depth_m=c.focal_spot_depth_m,
        detector_housing_m=np.array(c.detector_housing_m), calibration_shots=c.calibration_shots,
    )
    if carm.arc_radius_m * 1000 <= geom.sdd_mm - geom.sid_mm:
        raise SceneConfigError(f"{src}: carm.arc_radius_m must reach beyond the detector")
    views = [ViewConfig(name=v.name, target_m=np.array(v.target_m), distance_m=v.distance_m, yaw_deg=v.yaw_deg,
                        pitch_deg=v.pitch_deg) for v in sc.snapshot.views]
    size = sc.snapshot.image_size
    markers = {name: m.model_dump(exclude_none=True) for name, m in sc.markers.items()}
    b = sc.error_budget
    budget = ErrorBudgetConfig(
        terms=frozenset(BUDGET_TERMS if b.enabled else ()), seed=b.seed, jitter_rms_mm=b.tracker.jitter_rms_mm,
        systematic_rms_mm=b.tracker.systematic_rms_mm, systematic_length_mm=b.tracker.systematic_length_mm,
        latency_s=b.tracker.latency_s, marker_sphere_sd_mm=b.marker_sphere_sd_mm, needle_guide_tilt_deg=b.needle_guide_mount.tilt_deg,
        needle_guide_offset_mm=b.needle_guide_mount.offset_mm, carm_true_parameters=b.carm_calibration == "true")
    return SceneConfig(
        name=sc.name, path=path, patient=patient, table=table_cfg, robots=robots, needle_guide=needle, tracker_camera=camera,
        carm=carm, timestep_s=sc.physics.timestep_s, gravity_m_s2=np.array(sc.physics.gravity_m_s2),
        image_size=(int(size[0]), int(size[1])), views=views, markers=markers, error_budget=budget,
        procedure=sc.procedure.model_dump(),
    )
