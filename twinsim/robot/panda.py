"""Franka Panda from ``pybullet_data``, without its gripper, with a twinsim tool on the flange.

The stock URDF's ``<limit>`` values are the hard limits; the robot is rebuilt with the
datasheet soft limits so that PyBullet's own limit handling and our planners agree.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet_data

from twinsim.errors import TwinsimError
from twinsim.paths import cache_home
from twinsim.robot.tools import KinematicErrorConfig, NeedleGuideConfig, TrackerCameraConfig

# Franka Emika Panda datasheet soft joint limits, rad (see ../shared/DESIGN.md).
SOFT_LIMITS_RAD = np.array(
    [
        [-2.8973, 2.8973],
        [-1.7628, 1.7628],
        [-2.8973, 2.8973],
        [-3.0718, -0.0698],
        [-2.8973, 2.8973],
        [-0.0175, 3.7525],
        [-2.8973, 2.8973],
    ]
)
VELOCITY_LIMITS_RAD_S = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
ACCELERATION_LIMITS_RAD_S2 = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])
ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FLANGE_LINK = "panda_link8"
GRIPPER_LINKS = {"panda_hand", "panda_leftfinger", "panda_rightfinger", "panda_grasptarget"}
TOOL_TIP_LINK = "tool_tip"  # needle guide: tip of the guide channel, z along the channel
CAMERA_LINK = "tracker_optical"  # tracker camera: front face centre, z along the view


class JointLimitError(TwinsimError, ValueError):
    """A joint configuration that is not 7 values inside the Panda's soft limits."""


def check_joint_positions(q_rad: np.ndarray, what: str) -> np.ndarray:
    q = np.asarray(q_rad, dtype=np.float64)
    if q.shape != (7,):
        raise JointLimitError(f"{what}: a Panda configuration has 7 joint values, got {q.shape}")
    bad = [
        f"joint {i + 1} = {q[i]:.4f} not in [{lo}, {hi}]"
        for i, (lo, hi) in enumerate(SOFT_LIMITS_RAD)
        if not lo <= q[i] <= hi
    ]
    if bad:
        raise JointLimitError(f"{what} violates the Panda soft limits: " + "; ".join(bad))
    return q


def _inertial(parent: ET.Element, mass: float, xyz: tuple[float, float, float], box: tuple[float, float, float]) -> None:
    inertial = ET.SubElement(parent, "inertial")
    ET.SubElement(inertial, "origin", xyz=" ".join(map(str, xyz)), rpy="0 0 0")
    ET.SubElement(inertial, "mass", value=str(mass))
    a, b, c = box
    ET.SubElement(inertial, "inertia", ixx=str(mass * (b * b + c * c) / 12), iyy=str(mass * (a * a + c * c) / 12),
                  izz=str(mass * (a * a + b * b) / 12), ixy="0", ixz="0", iyz="0")


def _shape(link: ET.Element, kind: str, geometry: dict[str, str], z: float, rgba: str) -> None:
    for tag in ("visual", "collision"):
        el = ET.SubElement(link, tag)
        ET.SubElement(el, "origin", xyz=f"0 0 {z}", rpy="0 0 0")
        geom = ET.SubElement(el, "geometry")
        ET.SubElement(geom, kind, **geometry)
        if tag == "visual":
            mat = ET.SubElement(el, "material", name=f"{link.get('name')}_{kind}_{z}")
            ET.SubElement(mat, "color", rgba=rgba)


def _fixed_joint(robot: ET.Element, name: str, parent: str, child: str, z: float) -> None:
    j = ET.SubElement(robot, "joint", name=name, type="fixed")
    ET.SubElement(j, "origin", xyz=f"0 0 {z}", rpy="0 0 0")
    ET.SubElement(j, "parent", link=parent)
    ET.SubElement(j, "child", link=child)


def _frame_link(robot: ET.Element, name: str) -> None:
    link = ET.SubElement(robot, "link", name=name)
    _inertial(link, 0.001, (0.0, 0.0, 0.0), (0.01, 0.01, 0.01))


def _add_needle_guide(robot: ET.Element, cfg: NeedleGuideConfig, mount: GuideMountError | None = None) -> None:
    link = ET.SubElement(robot, "link", name="needle_guide")
    a, L = cfg.adapter_length_m, cfg.tube_length_m
    _inertial(link, cfg.mass_kg, (0.0, 0.0, (a + L) / 2), (cfg.adapter_diameter_m, cfg.adapter_diameter_m, a + L))
    _shape(link, "cylinder", {"radius": str(cfg.adapter_diameter_m / 2), "length": str(a)}, a / 2, "0.25 0.45 0.85 1")
    _shape(link, "cylinder", {"radius": str(cfg.tube_outer_diameter_m / 2), "length": str(L)}, a + L / 2, "0.75 0.75 0.8 1")
    _fixed_joint(robot, "needle_guide_mount", FLANGE_LINK, "needle_guide", 0.0)
    if mount is not None and (mount.tilt_deg or mount.offset_mm):
        # The guide as mounted: its bore tilted and shifted off the flange axis in seeded directions.
        rng = np.random.default_rng(mount.seed + 31)
        phi, psi = rng.uniform(0, 2 * np.pi, 2)
        tilt = np.deg2rad(mount.tilt_deg)
        origin = robot.findall("joint")[-1].find("origin")
        origin.set("rpy", f"{tilt * np.cos(phi):.9f} {tilt * np.sin(phi):.9f} 0")
        origin.set("xyz", f"{mount.offset_mm * 1e-3 * np.cos(psi):.9f} {mount.offset_mm * 1e-3 * np.sin(psi):.9f} 0")
    _frame_link(robot, TOOL_TIP_LINK)
    _fixed_joint(robot, "tool_tip_joint", "needle_guide", TOOL_TIP_LINK, a + L)


def _add_tracker_camera(robot: ET.Element, cfg: TrackerCameraConfig) -> None:
    link = ET.SubElement(robot, "link", name="tracker_camera")
    w, h, d = (float(v) for v in cfg.size_m)
    z0 = cfg.mount_offset_m + d / 2
    _inertial(link, cfg.mass_kg, (0.0, 0.0, z0), (w, h, d))
    _shape(link, "box", {"size": f"{w} {h} {d}"}, z0, "0.15 0.15 0.18 1")
    _fixed_joint(robot, "tracker_camera_mount", FLANGE_LINK, "tracker_camera", 0.0)
    _frame_link(robot, CAMERA_LINK)
    _fixed_joint(robot, "tracker_optical_joint", "tracker_camera", CAMERA_LINK, cfg.mount_offset_m + d)


def _perturb_joint_origins(robot: ET.Element, errors: KinematicErrorConfig) -> None:
    """Shift and tilt every arm joint origin (and the flange's) by seeded errors: the "real" arm."""
    rng = np.random.default_rng(errors.seed)
    for joint in robot.iter("joint"):
        if joint.get("name") not in (*ARM_JOINTS, "panda_joint8"):
            continue
        origin = joint.find("origin")
        xyz = np.array(origin.get("xyz", "0 0 0").split(), dtype=float)
        rpy = np.array(origin.get("rpy", "0 0 0").split(), dtype=float)
        xyz += rng.normal(0.0, errors.link_offset_sd_mm * 1e-3, 3)
        rpy += rng.normal(0.0, np.deg2rad(errors.link_angle_sd_deg), 3)
        origin.set("xyz", " ".join(f"{v:.9f}" for v in xyz))
        origin.set("rpy", " ".join(f"{v:.9f}" for v in rpy))


@dataclass(frozen=True)
class GuideMountError:
    """How the needle guide's bore sits off the flange axis as mounted (simulated reality)."""

    tilt_deg: float = 0.0
    offset_mm: float = 0.0
    seed: int = 0


def panda_urdf(tool: NeedleGuideConfig | TrackerCameraConfig, cache_dir: Path | None = None,
               errors: KinematicErrorConfig | None = None, guide_mount: GuideMountError | None = None) -> Path:
    """Write (once, keyed by content) the Panda URDF with soft limits and ``tool``; return its path.

    With ``errors`` (and ``guide_mount``) the joint origins are perturbed (simulated
    reality); without, it is the nominal model the twin uses.
    """
    src_dir = Path(pybullet_data.getDataPath()) / "franka_panda"
    robot = ET.parse(src_dir / "panda.urdf").getroot()
    for el in list(robot):
        names = {el.get("name")} | {c.get("link") for c in el if c.tag in ("parent", "child")}
        if names & GRIPPER_LINKS:
            robot.remove(el)
    for mesh in robot.iter("mesh"):
        fn = mesh.get("filename", "")
        if fn.startswith("package://"):
            mesh.set("filename", str(src_dir / fn.removeprefix("package://")))
    for joint in robot.iter("joint"):
        if joint.get("name") in ARM_JOINTS:
            lo, hi = SOFT_LIMITS_RAD[ARM_JOINTS.index(joint.get("name"))]
            limit = joint.find("limit")
            limit.set("lower", str(lo))
            limit.set("upper", str(hi))
    if errors is not None and (errors.link_offset_sd_mm or errors.link_angle_sd_deg):
        _perturb_joint_origins(robot, errors)
    if isinstance(tool, NeedleGuideConfig):
        _add_needle_guide(robot, tool, guide_mount)
    else:
        _add_tracker_camera(robot, tool)
    text = ET.tostring(robot, encoding="unicode")
    out_dir = cache_dir or cache_home() / "urdf"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"panda_{hashlib.sha256(text.encode()).hexdigest()[:16]}.urdf"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return out
