"""The simulated operating room: table, prone patient, two Pandas, C-arm, in one PyBullet world.

In simulation this world *is* reality. The twin and the planner read it only through sensors
(tracker frames, joint readings, X-ray images); evaluation code may read it directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pybullet as pb
import pybullet_data

from twinsim import frames
from twinsim.anatomy.ct import PatientDataError
from twinsim.anatomy.example import example_patient
from twinsim.anatomy.patient import Patient, build_patient
from twinsim.imaging.carm_geometry import PatientAxes, carm_pose
from twinsim.robot import panda
from twinsim.robot.bodies import box_body, mesh_body
from twinsim.robot.kinematics import arm_indices
from twinsim.sim.carm_body import create_carm_body
from twinsim.sim.scene_config import RobotConfig, SceneConfig, SceneConfigError, load_scene_config

TABLE_RGBA = (0.55, 0.58, 0.62, 1.0)
CART_RGBA = (0.30, 0.32, 0.36, 1.0)
SKIN_RGBA = (0.93, 0.76, 0.65, 1.0)
BONE_RGBA = (0.95, 0.93, 0.85, 1.0)
TARGET_RGBA = (0.85, 0.15, 0.15, 1.0)
# Closest-point queries look this far; anything further apart is reported as "> this". A
# long range against the patient's triangle meshes returns one point per triangle, enough to
# overflow PyBullet's result buffer, so queries also go link by link.
CLEARANCE_QUERY_M = 0.1


def T_world_ct_prone(patient: Patient, cfg: SceneConfig) -> np.ndarray:
    """Place the CT frame in the room: prone, head along ``head_toward``, skin on the table.

    The ``ct`` frame is RAS in mm; the returned transform maps ct millimetres to world metres'
    axes, with translation in metres (apply to ``p_ct_mm * 1e-3``).
    """
    pc = cfg.patient
    head = np.array([1.0, 0.0, 0.0]) * (1.0 if pc.head_toward == "+x" else -1.0)
    anterior = np.array([0.0, 0.0, -1.0])  # prone: anterior faces the table
    right = np.cross(anterior, head)  # R = A x S in a right-handed RAS frame
    R = np.column_stack([right, anterior, head])
    target_ct_m = patient.vertebra(pc.target_level).centroid_mm * 1e-3
    skin_world = patient.skin.vertices_mm * 1e-3 @ R.T
    t = np.zeros(3)
    t[:2] = pc.target_xy_m - (R @ target_ct_m)[:2]
    t[2] = cfg.table.top_height_m + pc.table_gap_m - skin_world[:, 2].min()
    return frames.make_transform(R, t)


@dataclass
class RobotHandle:
    name: str
    body: int
    joint_indices: list[int]
    link_index: dict[str, int]
    cart: int
    config: RobotConfig


@dataclass
class PairClearance:
    a: str
    b: str
    distance_m: float  # < 0: penetration depth; inf: further apart than the query range

    @property
    def colliding(self) -> bool:
        return self.distance_m <= 0.0


@dataclass
class OperatingRoom:
    """A built scene. Use :func:`build_operating_room`; call :meth:`close` when done."""

    client: int
    config: SceneConfig
    patient: Patient
    T_world_ct: np.ndarray  # ct (mm axes) -> world, translation in metres; see T_world_ct_prone
    bodies: dict[str, list[int]] = field(default_factory=dict)  # group name -> body ids
    robots: dict[str, RobotHandle] = field(default_factory=dict)
    carm_body: int = -1
    carm_links: dict[str, int] = field(default_factory=dict)  # "source", "detector" frame links
    T_world_carm: np.ndarray = field(default_factory=lambda: np.eye(4))
    vertebra_bodies: dict[str, int] = field(default_factory=dict)
    skin_body: int = -1
    T_world_ct_built: np.ndarray | None = None  # where the patient's meshes were baked (patient motion moves from there)

    # ---- state -------------------------------------------------------------------------
    def target_world_m(self) -> np.ndarray:
        """Centroid of the target vertebra in the world (ground truth: evaluation and set-up only)."""
        c = self.patient.vertebra(self.config.patient.target_level).centroid_mm
        return mesh_in_world_m(self.T_world_ct, c)

    def joint_positions(self, robot: str) -> np.ndarray:
        h = self.robots[robot]
        return np.array([s[0] for s in pb.getJointStates(h.body, h.joint_indices, physicsClientId=self.client)])

    def set_joint_positions(self, robot: str, q_rad: np.ndarray) -> None:
        """Teleport a robot to ``q_rad`` (checked against the soft limits) and hold it there."""
        h = self.robots[robot]
        q = panda.check_joint_positions(q_rad, f"{robot} robot configuration")
        for j, qi in zip(h.joint_indices, q, strict=True):
            pb.resetJointState(h.body, j, float(qi), physicsClientId=self.client)
        pb.setJointMotorControlArray(h.body, h.joint_indices, pb.POSITION_CONTROL, targetPositions=q.tolist(),
                                     forces=[87.0] * 4 + [12.0] * 3, physicsClientId=self.client)

    def base_pose(self, robot: str) -> np.ndarray:
        """World pose (metres) of a robot's base link frame (``base_op``/``base_nav``)."""
        h = self.robots[robot]
        pos, orn = pb.getBasePositionAndOrientation(h.body, physicsClientId=self.client)
        # PyBullet reports the base's centre of mass; the URDF frame sits at its inertial offset.
        local = pb.getDynamicsInfo(h.body, -1, physicsClientId=self.client)[3:5]
        return frames.pose_to_transform(pos, orn) @ frames.invert(frames.pose_to_transform(*local))

    def link_pose(self, robot: str, link: str) -> np.ndarray:
        """World pose (metres) of a robot link frame."""
        h = self.robots[robot]
        s = pb.getLinkState(h.body, h.link_index[link], computeForwardKinematics=True, physicsClientId=self.client)
        return frames.pose_to_transform(s[4], s[5])

    def carm_frame_pose(self, name: str) -> np.ndarray:
        """World pose (metres) of the C-arm's ``source`` or ``detector`` frame, as PyBullet has it."""
        s = pb.getLinkState(self.carm_body, self.carm_links[name], computeForwardKinematics=True, physicsClientId=self.client)
        return frames.pose_to_transform(s[4], s[5])

    def frame_graph(self) -> frames.FrameGraph:
        """Current ground-truth frames of the room (metres; ``ct`` axes in mm as documented)."""
        g = frames.FrameGraph()
        g.set("world", "ct", self.T_world_ct)
        for name, tag in (("operation", "op"), ("navigation", "nav")):
            T_world_base = self.base_pose(name)
            g.set("world", f"base_{tag}", T_world_base)
            g.set(f"base_{tag}", f"flange_{tag}", frames.invert(T_world_base) @ self.link_pose(name, panda.FLANGE_LINK))
        g.set("flange_op", "tool", frames.invert(self.link_pose("operation", panda.FLANGE_LINK))
              @ self.link_pose("operation", panda.TOOL_TIP_LINK))
        g.set("flange_nav", "cam", frames.invert(self.link_pose("navigation", panda.FLANGE_LINK))
              @ self.link_pose("navigation", panda.CAMERA_LINK))
        g.set("world", "carm", self.T_world_carm)
        geom = self.config.carm.geometry
        g.set("carm", "source", geom.T_carm_source)
        g.set("carm", "detector", geom.T_carm_detector)
        return g

    def set_carm_angles(self, lao_deg: float, cranial_deg: float) -> np.ndarray:
        """Rotate the C-arm about the isocenter; returns the new ``T_world_carm``."""
        iso = self.T_world_carm[:3, 3]
        self.T_world_carm = carm_pose(iso, PatientAxes.from_T_world_ct(self.T_world_ct), lao_deg, cranial_deg)
        p, q = frames.transform_to_pose(self.T_world_carm)
        pb.resetBasePositionAndOrientation(self.carm_body, p, q, physicsClientId=self.client)
        return self.T_world_carm

    def park_carm(self, parked: bool = True) -> None:
        """Roll the C-arm out of the room (``parked``) or back to its pose, e.g. while the robot positions."""
        T = frames.make_transform(t=[0.0, 0.0, -10.0]) @ self.T_world_carm if parked else self.T_world_carm
        p, q = frames.transform_to_pose(T)
        pb.resetBasePositionAndOrientation(self.carm_body, p, q, physicsClientId=self.client)

    def patient_motion(self) -> np.ndarray:
        """The patient's rigid motion since the room was built (world metres; identity when still)."""
        base = self.T_world_ct if self.T_world_ct_built is None else self.T_world_ct_built
        return self.T_world_ct @ frames.invert(base)

    def move_patient(self, T_motion_m: np.ndarray) -> None:
        """Put the patient (skin, bones, and what is clamped to them) at ``T_motion_m`` from where it was built.

        A rigid motion in the world (a bump, a slide on the table, a breath); the meshes were baked
        in world coordinates, so each body's base pose is the motion itself.
        """
        if self.T_world_ct_built is None:
            self.T_world_ct_built = self.T_world_ct.copy()
        T = np.asarray(T_motion_m, dtype=np.float64)
        self.T_world_ct = T @ self.T_world_ct_built
        p, q = frames.transform_to_pose(T)
        for b in self.bodies.get("patient", []):
            pb.resetBasePositionAndOrientation(b, p, q, physicsClientId=self.client)

    # ---- collision ---------------------------------------------------------------------
    def clearance(self, group_a: str, group_b: str, query_m: float = CLEARANCE_QUERY_M) -> PairClearance:
        """Smallest signed distance between two body groups (negative when they interpenetrate)."""
        best = np.inf
        for a, b in itertools.product(self.bodies[group_a], self.bodies[group_b]):
            for link in range(-1, pb.getNumJoints(a, physicsClientId=self.client)):
                pts = pb.getClosestPoints(a, b, distance=query_m, linkIndexA=link, physicsClientId=self.client)
                if pts:
                    best = min(best, min(p[8] for p in pts))
        return PairClearance(group_a, group_b, float(best))

    def clearance_report(self) -> list[PairClearance]:
        """Every pair that matters for safety: each robot against everything, C-arm vs patient and table."""
        others = ["patient", "table", "carm"]
        pairs = [(r, o) for r in ("operation robot", "navigation robot") for o in others]
        pairs.append(("operation robot", "navigation robot"))
        pairs += [("carm", "patient"), ("carm", "table")]
        return [self.clearance(a, b) for a, b in pairs]

    # ---- physics -----------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        for _ in range(n):
            pb.stepSimulation(physicsClientId=self.client)

    def close(self) -> None:
        if pb.isConnected(self.client):
            pb.disconnect(self.client)

    def __enter__(self) -> OperatingRoom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scene_patient_files(cfg: SceneConfig) -> tuple[Path, Path, Path | None, str | None]:
    """``(ct, labels, label_table, name)`` of the scene's patient."""
    pc = cfg.patient
    if pc.source == "example":
        ex = example_patient()
        return ex.ct, ex.labels, ex.label_table, ex.name
    return pc.ct, pc.labels, pc.label_table, None


def load_scene_patient(cfg: SceneConfig, progress: bool | None = None, cache_dir: Path | None = None) -> Patient:
    """The scene's patient, meshed; a CT that cannot be used, or a target that is not there, names its scene key."""
    ct, labels, table, name = scene_patient_files(cfg)
    try:
        patient = build_patient(ct, labels, table, name=name, progress=progress, cache_dir=cache_dir)
    except PatientDataError as exc:
        raise PatientDataError(f"{cfg.path}: patient.source: {exc}") from None
    try:
        patient.vertebra(cfg.patient.target_level)
    except PatientDataError as exc:
        raise PatientDataError(f"{cfg.path}: patient.target_level: {exc}") from None
    return patient


def mesh_in_world_m(T_world_ct: np.ndarray, vertices_ct_mm: np.ndarray) -> np.ndarray:
    """ct-frame millimetres to world metres (``T_world_ct`` carries metre translations)."""
    return frames.transform_points(T_world_ct, vertices_ct_mm * 1e-3)


def _add_robot(client: int, cfg: SceneConfig, rc: RobotConfig) -> RobotHandle:
    tool = cfg.needle_guide if rc.tool == "needle_guide" else cfg.tracker_camera
    tilt_deg, offset_mm = cfg.error_budget.guide_mount if rc.tool == "needle_guide" else (0.0, 0.0)
    mount = panda.GuideMountError(tilt_deg, offset_mm, cfg.error_budget.seed)
    urdf = panda.panda_urdf(tool, errors=rc.kinematic_errors, guide_mount=mount)  # the room is reality: the arm as built
    try:
        q0 = panda.check_joint_positions(rc.home_q_rad, f"robots.{rc.name}.home_q_rad in {cfg.path}")
    except panda.JointLimitError as exc:
        raise SceneConfigError(str(exc)) from exc
    quat = frames.matrix_to_quat_xyzw(frames.rpy_to_matrix(np.deg2rad(rc.base_rpy_deg)))
    body = pb.loadURDF(str(urdf), basePosition=rc.base_xyz_m.tolist(), baseOrientation=quat.tolist(),
                       useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
    link_index, joints = arm_indices(client, body, panda.ARM_JOINTS)
    height = rc.base_xyz_m[2]
    cart = box_body(client, [*rc.cart_size_m, height], [rc.base_xyz_m[0], rc.base_xyz_m[1], height / 2], CART_RGBA)
    h = RobotHandle(rc.name, body, joints, link_index, cart, rc)
    for j, qi in zip(joints, q0, strict=True):
        pb.resetJointState(body, j, float(qi), physicsClientId=client)
    pb.setJointMotorControlArray(body, joints, pb.POSITION_CONTROL, targetPositions=q0.tolist(),
                                 forces=[87.0] * 4 + [12.0] * 3, physicsClientId=client)
    return h


def build_operating_room(
    scene: str | Path | SceneConfig | None = None,
    gui: bool = False,
    patient: Patient | None = None,
    progress: bool | None = None,
) -> OperatingRoom:
    """Build the room described by a scene file (the default scene when None)."""
    cfg = scene if isinstance(scene, SceneConfig) else load_scene_config(scene)
    patient = patient or load_scene_patient(cfg, progress=progress)
    try:
        patient.require_back_in_view()
    except PatientDataError as exc:
        raise PatientDataError(f"{cfg.path}: patient.source: {exc}") from None
    client = pb.connect(pb.GUI if gui else pb.DIRECT)
    if client < 0:
        raise RuntimeError("could not start PyBullet" + (" with a GUI (is there a display?)" if gui else ""))
    try:
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
        pb.setGravity(*cfg.gravity_m_s2.tolist(), physicsClientId=client)
        pb.setTimeStep(cfg.timestep_s, physicsClientId=client)
        floor = pb.loadURDF("plane.urdf", physicsClientId=client)

        tc = cfg.table
        top_z = tc.top_height_m - tc.top_size_m[2] / 2
        top = box_body(client, tc.top_size_m, [*tc.top_center_xy_m, top_z], TABLE_RGBA)
        col_h = tc.top_height_m - tc.top_size_m[2]
        column = box_body(client, [*tc.column_size_m, col_h], [tc.column_x_m, tc.top_center_xy_m[1], col_h / 2], TABLE_RGBA)

        T_world_ct = T_world_ct_prone(patient, cfg)
        skin = mesh_body(client, mesh_in_world_m(T_world_ct, patient.skin.vertices_mm), patient.skin.faces, SKIN_RGBA)
        vert_bodies = {
            lvl: mesh_body(client, mesh_in_world_m(T_world_ct, m.vertices_mm), m.faces,
                           TARGET_RGBA if lvl == cfg.patient.target_level else BONE_RGBA)
            for lvl, m in patient.vertebrae.items()
        }

        room = OperatingRoom(client=client, config=cfg, patient=patient, T_world_ct=T_world_ct)
        room.skin_body = skin
        room.vertebra_bodies = vert_bodies
        for name, rc in cfg.robots.items():
            room.robots[name] = _add_robot(client, cfg, rc)

        iso = cfg.carm.isocenter
        iso_world = room.target_world_m() if isinstance(iso, str) else np.asarray(iso)
        room.T_world_carm = carm_pose(iso_world, PatientAxes.from_T_world_ct(T_world_ct), cfg.carm.lao_deg, cfg.carm.cranial_deg)
        room.carm_body, room.carm_links = create_carm_body(client, cfg.carm, room.T_world_carm)

        op, nav = room.robots["operation"], room.robots["navigation"]
        room.bodies = {
            "floor": [floor],
            "table": [top, column],
            "patient": [skin, *vert_bodies.values()],
            "operation robot": [op.body, op.cart],
            "navigation robot": [nav.body, nav.cart],
            "carm": [room.carm_body],
        }
        return room
    except Exception:
        pb.disconnect(client)
        raise
