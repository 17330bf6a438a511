"""The scene file: every pose and dimension of the operating room, read and checked here.

A scene is a YAML file in ``scenarios/``. Lengths are metres and angles degrees unless a key
says otherwise (``_rad``, ``_mm``). Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from twinsim.imaging.carm_geometry import CArmGeometry
from twinsim.robot.tools import KinematicErrorConfig, NeedleGuideConfig, TrackerCameraConfig  # noqa: F401 (part of the scene)

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios"
DEFAULT_SCENE = SCENARIOS_DIR / "default.yaml"


class SceneConfigError(ValueError):
    """The scene file is missing, malformed, or holds an impossible value."""


class _Reader:
    """Typed access to a nested mapping that reports the dotted key path on error."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise SceneConfigError(f"{source}: '{where}' must be a mapping")
        self.data, self.where, self.source = data, where, source

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise SceneConfigError(f"{self.source}: missing key '{self._key(key)}'")
            return default
        return self.data[key]

    def sub(self, key: str) -> _Reader:
        return _Reader(self.raw(key), self._key(key), self.source)

    def num(self, key: str, default: Any = ..., positive: bool = False) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be a number, got {v!r}")
        if positive and v <= 0:
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be > 0, got {v}")
        return float(v)

    def vec(self, key: str, n: int, default: Any = ..., positive: bool = False) -> np.ndarray:
        v = self.raw(key, default)
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be a list of {n} numbers, got {v!r}")
        if positive and np.any(arr <= 0):
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be all > 0, got {v!r}")
        return arr

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be a string, got {v!r}")
        if choices and v not in choices:
            raise SceneConfigError(f"{self.source}: '{self._key(key)}' must be one of {choices}, got {v!r}")
        return v


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


def _path(value: Any, base: Path, key: str, source: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SceneConfigError(f"{source}: '{key}' must be a path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def load_scene_config(path: str | Path | None = None) -> SceneConfig:
    path = Path(path) if path else DEFAULT_SCENE
    src = str(path)
    if not path.is_file():
        raise SceneConfigError(f"scene file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SceneConfigError(f"{src}: not valid YAML: {exc}") from exc
    r = _Reader(data, "", src)

    p = r.sub("patient")
    source = p.raw("source")
    if source == "example":
        ct = labels = table = None
        kind = "example"
    elif isinstance(source, dict):
        s = _Reader(source, "patient.source", src)
        ct = _path(s.raw("ct"), path.parent, "patient.source.ct", src)
        labels = _path(s.raw("labels"), path.parent, "patient.source.labels", src)
        table = _path(s.raw("label_table", None), path.parent, "patient.source.label_table", src)
        kind = "files"
    else:
        raise SceneConfigError(f"{src}: 'patient.source' must be 'example' or a mapping with ct/labels paths")
    patient = PatientConfig(
        source=kind, ct=ct, labels=labels, label_table=table,
        target_level=p.text("target_level"),
        position=p.text("position", choices=("prone",)),
        head_toward=p.text("head_toward", choices=("+x", "-x")),
        target_xy_m=p.vec("target_xy_m", 2),
        table_gap_m=p.num("table_gap_m", 0.0),
    )

    t = r.sub("table")
    table_cfg = TableConfig(
        top_size_m=t.vec("top_size_m", 3, positive=True),
        top_center_xy_m=t.vec("top_center_xy_m", 2),
        top_height_m=t.num("top_height_m", positive=True),
        column_size_m=t.vec("column_size_m", 2, positive=True),
        column_x_m=t.num("column_x_m"),
    )

    robots = {}
    rr = r.sub("robots")
    for name in ("operation", "navigation"):
        rb = rr.sub(name)
        robots[name] = RobotConfig(
            name=name,
            base_xyz_m=rb.vec("base_xyz_m", 3),
            base_rpy_deg=rb.vec("base_rpy_deg", 3),
            cart_size_m=rb.vec("cart_size_m", 2, positive=True),
            home_q_rad=rb.vec("home_q_rad", 7),
            tool=rb.text("tool", choices=("needle_guide", "tracker_camera")),
            kinematic_errors=_kinematic_errors(rb),
        )

    ng = r.sub("needle_guide")
    needle = NeedleGuideConfig(
        adapter_length_m=ng.num("adapter_length_m", positive=True),
        adapter_diameter_m=ng.num("adapter_diameter_m", positive=True),
        tube_length_m=ng.num("tube_length_m", positive=True),
        tube_outer_diameter_m=ng.num("tube_outer_diameter_m", positive=True),
        channel_diameter_m=ng.num("channel_diameter_m", positive=True),
        mass_kg=ng.num("mass_kg", positive=True),
    )
    if needle.channel_diameter_m >= needle.tube_outer_diameter_m:
        raise SceneConfigError(f"{src}: needle_guide.channel_diameter_m must be smaller than tube_outer_diameter_m")

    tc = r.sub("tracker_camera")
    camera = TrackerCameraConfig(
        model=tc.text("model"),
        size_m=tc.vec("size_m", 3, positive=True),
        mount_offset_m=tc.num("mount_offset_m"),
        mass_kg=tc.num("mass_kg", positive=True),
    )

    c = r.sub("carm")
    iso_raw = c.raw("isocenter")
    iso: str | np.ndarray = "target" if iso_raw == "target" else c.vec("isocenter", 3)
    try:
        geom = CArmGeometry(
            sdd_mm=c.num("sdd_mm", positive=True),
            sid_mm=c.num("sid_mm", positive=True),
            detector_size_mm=tuple(c.vec("detector_size_mm", 2, positive=True)),
            pixel_spacing_mm=c.num("pixel_spacing_mm", positive=True),
        )
    except ValueError as exc:
        raise SceneConfigError(f"{src}: carm: {exc}") from exc
    carm = CArmConfig(
        geometry=geom, isocenter=iso,
        lao_deg=c.num("lao_deg", 0.0), cranial_deg=c.num("cranial_deg", 0.0),
        arc_radius_m=c.num("arc_radius_m", positive=True),
        arc_side=c.text("arc_side", choices=("left", "right")),
        arc_width_m=c.num("arc_width_m", positive=True),
        arc_thickness_m=c.num("arc_thickness_m", positive=True),
        arc_segments=int(c.num("arc_segments", 16, positive=True)),
        source_housing_m=c.vec("source_housing_m", 3, positive=True),
        focal_spot_depth_m=c.num("focal_spot_depth_m", positive=True),
        detector_housing_m=c.vec("detector_housing_m", 3, positive=True),
    )
    if carm.arc_radius_m * 1000 <= geom.sdd_mm - geom.sid_mm:
        raise SceneConfigError(f"{src}: carm.arc_radius_m must reach beyond the detector")

    ph = r.sub("physics")
    snap = r.sub("snapshot")
    views = []
    for i, v in enumerate(snap.raw("views")):
        vr = _Reader(v, f"snapshot.views[{i}]", src)
        views.append(ViewConfig(
            name=vr.text("name"), target_m=vr.vec("target_m", 3), distance_m=vr.num("distance_m", positive=True),
            yaw_deg=vr.num("yaw_deg"), pitch_deg=vr.num("pitch_deg"),
        ))
    size = snap.vec("image_size", 2, positive=True)
    return SceneConfig(
        name=r.text("name"), path=path, patient=patient, table=table_cfg, robots=robots,
        needle_guide=needle, tracker_camera=camera, carm=carm,
        timestep_s=ph.num("timestep_s", positive=True), gravity_m_s2=ph.vec("gravity_m_s2", 3),
        image_size=(int(size[0]), int(size[1])), views=views, markers=_markers(r),
    )


def _kinematic_errors(rb: _Reader) -> KinematicErrorConfig:
    if "kinematic_errors" not in rb.data:
        return KinematicErrorConfig()
    k = rb.sub("kinematic_errors")
    vals = {key: k.num(key, 0.0) for key in ("link_offset_sd_mm", "link_angle_sd_deg", "joint_zero_sd_deg", "repeatability_mm")}
    for key, v in vals.items():
        if v < 0:
            raise SceneConfigError(f"{rb.source}: '{k._key(key)}' must be >= 0, got {v}")
    if vals["link_offset_sd_mm"] > 20 or vals["link_angle_sd_deg"] > 2 or vals["joint_zero_sd_deg"] > 2:
        raise SceneConfigError(f"{rb.source}: '{k.where}' holds errors far beyond any real arm ({vals}); "
                               "lengths are mm and angles degrees")
    return KinematicErrorConfig(seed=int(k.num("seed", 0)), **vals)


def _markers(r: _Reader) -> dict[str, dict]:
    raw = r.raw("markers", {})
    if not isinstance(raw, dict):
        raise SceneConfigError(f"{r.source}: 'markers' must be a mapping of tool name -> mount")
    out = {}
    for name, mount in raw.items():
        m = _Reader(mount, f"markers.{name}", r.source)
        m.text("attach")
        m.vec("offset_m", 3, [0.0, 0.0, 0.0])
        out[str(name)] = dict(mount)
    return out
