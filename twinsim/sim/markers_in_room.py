"""Marker tools mounted in the room, and the simulated Vega on the navigation robot.

Mounts come from the scene file's ``markers`` section. A marker's pose follows its parent
(patient, C-arm, a robot link or the world); its face is turned towards the tracker camera
as the room is built, as a person sets up a reference. Poses here are ground truth: only the
simulated tracker and evaluation code read them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from twinsim import frames
from twinsim.anatomy.labels import normalise_level
from twinsim.anatomy.landmarks import spinous_tip_mm
from twinsim.anatomy.patient import Patient
from twinsim.robot import panda
from twinsim.sim.scene_config import SceneConfigError
from twinsim.sim.world import OperatingRoom, mesh_in_world_m
from twinsim.tracking.markers import check_distinguishable, load_marker
from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega


def spinous_tip_world_m(room: OperatingRoom, level: str) -> np.ndarray:
    """The spinous process tip of a vertebra in the room (the reference clamp site)."""
    return mesh_in_world_m(room.T_world_ct, spinous_tip_mm(room.patient.vertebra(level)))


DEFAULT_CLEAR_OF_SKIN_M = 0.08  # the reference's marker above the skin over its clamp


def skin_height_above_m(room: OperatingRoom, p_world_m: np.ndarray) -> float | None:
    """The world height of the patient's skin straight above a point (None where no skin is above it)."""
    import open3d as o3d

    from twinsim.anatomy.meshing import raycasting_scene

    v = mesh_in_world_m(room.T_world_ct, room.patient.skin.vertices_mm)
    scene = raycasting_scene(v, room.patient.skin.faces)
    t = float(scene.cast_rays(o3d.core.Tensor([[*np.asarray(p_world_m, dtype=np.float32), 0.0, 0.0, 1.0]],
                                               dtype=o3d.core.Dtype.Float32))["t_hit"].numpy()[0])
    return float(p_world_m[2]) + t if np.isfinite(t) else None


def facing(origin: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation whose z axis points from ``origin`` to ``target``."""
    z = target - origin
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 0.0, 1.0], z)
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0.0, 0.0])
    return np.column_stack([x, np.cross(z, x), z])


def clamp_level(patient: Patient, target_level: str, named: str | None, key: str) -> str:
    """The vertebra a patient-mounted marker is clamped to: ``named`` if the scene names one, else the nearest.

    The nearest is the complete vertebra (other than the target, whose pedicles take the needles)
    whose centroid lies closest to the target's; the target itself only when it is the one
    complete vertebra. A named vertebra that is cut or absent is refused with its scene ``key``.
    """
    if named is not None:
        level = normalise_level(named) or named
        if level not in patient.vertebrae:
            why = (f"is cut by the CT field of view ({'/'.join(patient.cut_levels[level])} edge)" if level in patient.cut_levels
                   else "is not in the label map")
            raise SceneConfigError(f"{key}: vertebra {named} {why}; complete: {', '.join(patient.levels)} "
                                   "(leave the key out to clamp on the nearest complete vertebra)")
        return level
    others = [lvl for lvl in patient.levels if lvl != target_level]
    if not others:
        return target_level
    c = patient.vertebra(target_level).centroid_mm
    return min(others, key=lambda lvl: float(np.linalg.norm(patient.vertebrae[lvl].centroid_mm - c)))


def _parent_pose(room: OperatingRoom, mount: dict, name: str) -> Callable[[], np.ndarray]:
    attach = mount.get("attach")
    if attach == "patient":
        level = clamp_level(room.patient, room.config.patient.target_level, mount.get("level"),
                            f"{room.config.path}: markers.{name}.level")
        tip = spinous_tip_world_m(room, level)
        T = frames.make_transform(t=tip)
        return lambda: room.patient_motion() @ T  # clamped to the bone: it moves with the patient
    if attach == "world":
        return lambda: np.eye(4)
    if attach == "carm":
        return lambda: room.T_world_carm
    if attach in room.robots:
        link = str(mount.get("link", panda.FLANGE_LINK))
        if link not in room.robots[attach].link_index:
            raise SceneConfigError(f"markers.{name}: robot {attach} has no link {link!r}")
        return lambda: room.link_pose(attach, link)
    raise SceneConfigError(f"markers.{name}.attach must be patient, world, carm or a robot name, got {attach!r}")


def room_tools(room: OperatingRoom, mounts: dict[str, dict]) -> list[SimulatedTool]:
    """One SimulatedTool per mounted marker, port handles 1..n in file order."""
    cam = room.link_pose("navigation", panda.CAMERA_LINK)[:3, 3]
    tools = []
    for handle, (name, mount) in enumerate(mounts.items(), start=1):
        parent = _parent_pose(room, mount, name)
        offset = np.asarray(mount.get("offset_m", [0.0, 0.0, 0.0]), dtype=np.float64)
        T_world_parent = parent()
        in_world = mount.get("attach") in ("patient", "world")
        origin = T_world_parent[:3, 3] + (offset if in_world else T_world_parent[:3, :3] @ offset)
        if mount.get("attach") == "patient":
            # A heavier patient has more tissue over the spinous process: the post is long enough to clear the skin.
            skin_z = skin_height_above_m(room, T_world_parent[:3, 3])
            clear = float(mount.get("clear_of_skin_m", DEFAULT_CLEAR_OF_SKIN_M))
            if skin_z is not None and origin[2] < skin_z + clear:
                origin = origin + np.array([0.0, 0.0, skin_z + clear - origin[2]])
        T_world_marker = frames.make_transform(facing(origin, cam), origin)
        T_parent_marker = frames.invert(T_world_parent) @ T_world_marker  # rigid from now on

        def pose(p: Callable[[], np.ndarray] = parent, T: np.ndarray = T_parent_marker) -> np.ndarray:
            return p() @ T

        marker = load_marker(name)
        budget = room.config.error_budget
        offsets = None
        if budget.sphere_sd_mm > 0:  # each tool built with its own spheres a little off their definition
            offsets = np.random.default_rng([budget.seed, handle]).normal(0.0, budget.sphere_sd_mm / np.sqrt(3),
                                                                          marker.spheres_mm.shape)
        tools.append(SimulatedTool(handle, marker, pose, offsets))
    check_distinguishable([t.marker for t in tools])
    return tools


def room_tracker(room: OperatingRoom, configuration: dict | None = None) -> SimulatedVega:
    """The Vega on the navigation robot's flange, seeing the room's markers (line of sight in PyBullet).

    Its errors follow the scene's error budget; keys in ``configuration`` override them.
    """
    mounts = room.config.markers
    if not mounts:
        raise SceneConfigError(f"{room.config.path}: no 'markers' section; the tracker has nothing to track")
    configuration = {**room.config.error_budget.tracker_configuration(), **(configuration or {})}
    vega = SimulatedVega(configuration, room_tools(room, mounts),
                         lambda: room.link_pose("navigation", panda.CAMERA_LINK), client=room.client)
    vega.start_tracking()
    return vega
