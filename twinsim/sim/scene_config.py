"""The scene file: every pose and dimension of the operating room, read and checked here (schema: ``scene_schema``).

A scene is a YAML file in ``scenarios/``. Lengths are metres and angles degrees unless a key
says otherwise (``_rad``, ``_mm``). Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from twinsim.imaging.carm_geometry import CArmGeometry
from twinsim.report import read_yaml_mapping, validation_problems
from twinsim.robot.tools import KinematicErrorConfig, NeedleGuideConfig, TrackerCameraConfig  # noqa: F401 (part of the scene)
from twinsim.sim import scene_schema as schema

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios"
DEFAULT_SCENE = SCENARIOS_DIR / "default.yaml"


class SceneConfigError(ValueError):
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


@dataclass
class ViewConfig:
    name: str
    target_m: np.ndarray
    distance_m: float
    yaw_deg: float
    pitch_deg: float


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
    markers: dict[str, dict] = field(default_factory=dict)  # tool name -> mount (see scenarios/default.yaml)


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
        detector_housing_m=np.array(c.detector_housing_m),
    )
    if carm.arc_radius_m * 1000 <= geom.sdd_mm - geom.sid_mm:
        raise SceneConfigError(f"{src}: carm.arc_radius_m must reach beyond the detector")
    views = [ViewConfig(name=v.name, target_m=np.array(v.target_m), distance_m=v.distance_m, yaw_deg=v.yaw_deg,
                        pitch_deg=v.pitch_deg) for v in sc.snapshot.views]
    size = sc.snapshot.image_size
    markers = {name: m.model_dump(exclude_none=True) for name, m in sc.markers.items()}
    return SceneConfig(
        name=sc.name, path=path, patient=patient, table=table_cfg, robots=robots, needle_guide=needle, tracker_camera=camera,
        carm=carm, timestep_s=sc.physics.timestep_s, gravity_m_s2=np.array(sc.physics.gravity_m_s2),
        image_size=(int(size[0]), int(size[1])), views=views, markers=markers,
    )
