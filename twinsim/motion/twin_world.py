"""The twin's collision world: every body the twin knows, placed where its sensors say, in ``ref``.

Its own PyBullet client, in the patient reference frame with metres (``ref`` mm / 1000):

- the operation robot, nominal model, at the calibrated ``T_ref_base``, posed by joint values;
- the navigation robot, nominal model, placed through the tracker: the camera sees the patient
  reference, its joint readings give the camera in its base;
- the C-arm, datasheet shape, placed by its tracked marker and its calibration;
- the table and floor, from points the tracked pointer touched on the table top;
- the patient envelope, from points the pointer swept over the back (see :mod:`envelope`).

Checks run Bullet's own broad and narrow phase (``performCollisionDetection``) with the
contact threshold at the largest clearance asked for, so every pair closer than its clearance
is reported with its distance. The operation robot is loaded as a free body (never stepped) so
that Bullet pairs it with the other fixed bodies too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pybullet as pb

from twinsim import frames
from twinsim.motion.envelope import PatientEnvelope, TableModel
from twinsim.motion.room_model import RoomModel
from twinsim.robot import panda
from twinsim.robot.bodies import box_body, compound_box_body
from twinsim.robot.kinematics import arm_indices, link_pose_m
from twinsim.robot.tools import NeedleGuideConfig, TrackerCameraConfig

OPERATION = "operation robot"
GUIDE_LINKS = ("needle_guide", panda.TOOL_TIP_LINK)
_GREY = (0.6, 0.6, 0.65, 1.0)
_SKIN = (0.93, 0.76, 0.65, 0.5)


@dataclass(frozen=True)
class ClearanceSettings:
    """Clearances a motion must keep, mm: between robot links and every other body, and for the guide to the patient.

    The guide docks at ``dock_standoff_mm`` from the envelope on the path's axis, so it may come
    closer to the patient than the arm's links; only the needle's line may enter the envelope.
    """

    robot_mm: float = 15.0
    guide_to_patient_mm: float = 4.0
    max_step_rad: float = 0.01  # densest joint step between checked configurations

    @property
    def threshold_m(self) -> float:
        return max(self.robot_mm, self.guide_to_patient_mm) * 1e-3


@dataclass
class Contact:
    body: str  # the other body
    link: str  # the operation robot's link
    clearance_mm: float  # negative: interpenetration depth
    required_mm: float
    point_ref_mm: np.ndarray

    def describe(self) -> str:
        verb = f"penetrates by {-self.clearance_mm:.1f} mm" if self.clearance_mm < 0 else f"clears by only {self.clearance_mm:.1f} mm"
        return f"{self.link} vs {self.body}: {verb} (needs {self.required_mm:.0f} mm) at {np.round(self.point_ref_mm, 0).tolist()} mm in ref"


@dataclass
class PathCheck:
    """A dense check of a joint path: passed, or the first configuration that is too close."""

    ok: bool
    configurations: int
    seconds: float
    contact: Contact | None = None
    waypoint: float | None = None  # where on the path: waypoint index plus fraction of the segment
    min_clearance_mm: float = np.inf
    bodies: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return f"clear ({self.configurations} configurations, closest {self.min_clearance_mm:.1f} mm)"
        what = self.contact.describe() if self.contact is not None else "a contact"
        return f"at waypoint {self.waypoint:.2f} of the path: {what}"


def densify(waypoints_rad: Sequence[np.ndarray] | np.ndarray, max_step_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Configurations along straight joint segments no more than ``max_step_rad`` apart, and where each lies (index + fraction)."""
    W = np.asarray(waypoints_rad, dtype=np.float64)
    qs, where = [W[0]], [0.0]
    for i in range(len(W) - 1):
        n = max(1, int(np.ceil(np.max(np.abs(W[i + 1] - W[i])) / max_step_rad)))
        for k in range(1, n + 1):
            qs.append(W[i] + (W[i + 1] - W[i]) * k / n)
            where.append(i + k / n)
    return np.array(qs), np.array(where)


class TwinWorld:
    def __init__(self, model: RoomModel, T_ref_base_mm: np.ndarray, table: TableModel | None = None,
                 settings: ClearanceSettings | None = None) -> None:
        self.model, self.settings = model, settings or ClearanceSettings()
        self.table = table
        self.client = pb.connect(pb.DIRECT)
        pb.setPhysicsEngineParameter(contactBreakingThreshold=self.settings.threshold_m, physicsClientId=self.client)
        self.names: dict[int, str] = {}
        self._cart: dict[str, tuple[int, float]] = {}  # robot name -> (cart body, height m)
        self.carm_source_ref_mm: np.ndarray | None = None
        self.T_ref_base_m = frames.scale_translation(frames.as_transform(T_ref_base_mm, "T_ref_base"), 1e-3)
        self.robot = self._load_robot(OPERATION, model.needle_guide, self.T_ref_base_m, fixed=False)
        self.link_index, self.joints = arm_indices(self.client, self.robot, panda.ARM_JOINTS)
        self.link_name = {i: n for n, i in self.link_index.items()} | {-1: "panda_link0"}
        self._guide_links = {self.link_index[n] for n in GUIDE_LINKS}
        self.carm: int | None = None
        self.navigation: int | None = None
        self.envelope: PatientEnvelope | None = None
        self.envelope_meshes: list[tuple[str, np.ndarray, np.ndarray]] = []  # (name, vertices mm, faces): what the view draws
        self.navigation_pose: tuple[np.ndarray, np.ndarray] | None = None  # (T_ref_base m, joints rad) of the navigation robot
        if table is not None:
            for size, T, name in table.boxes_m():
                p, q = frames.transform_to_pose(T)
                self._add(box_body(self.client, size, p, _GREY, q), name)

    # ---- building ---------------------------------------------------------------------
    def _add(self, body: int, name: str) -> int:
        self.names[body] = name
        return body

    def _load_robot(self, name: str, tool: NeedleGuideConfig | TrackerCameraConfig, T_ref_base_m: np.ndarray, fixed: bool) -> int:
        p, q = frames.transform_to_pose(T_ref_base_m)
        body = pb.loadURDF(str(panda.panda_urdf(tool)), p, q, useFixedBase=fixed, physicsClientId=self.client)
        self._add(body, name)
        tag = "operation" if name == OPERATION else "navigation"
        if tag in self.model.cart_size_m:
            self._cart_under(body, name, T_ref_base_m, self.model.cart_size_m[tag])
        return body

    def _cart_under(self, robot: int, name: str, T_ref_base_m: np.ndarray, size_xy_m: np.ndarray) -> None:
        """The robot's cart from the base down to the floor (or 0.8 m without a floor yet), as the cylinder inscribed
        in its footprint: how the cart turns under the base is not sensed."""
        height = 0.8 if self.table is None else max(0.05, self.table.height_above_floor_mm(T_ref_base_m[:3, 3] * 1000.0) * 1e-3)
        T = T_ref_base_m @ frames.make_transform(t=[0.0, 0.0, -height / 2])
        p, q = frames.transform_to_pose(T)
        radius = float(np.min(size_xy_m)) / 2
        col = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=self.client)
        vis = pb.createVisualShape(pb.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=list(_GREY), physicsClientId=self.client)
        cart = self._add(pb.createMultiBody(0, col, vis, p, q, physicsClientId=self.client), f"{name} cart")
        pb.setCollisionFilterPair(robot, cart, -1, -1, 0, physicsClientId=self.client)  # the base stands on it
        self._cart[name] = (cart, height)

    def move_base(self, T_ref_base_mm: np.ndarray) -> None:
        """Stand the operation robot (and its cart) elsewhere: the placement search's candidates."""
        self.T_ref_base_m = frames.scale_translation(frames.as_transform(T_ref_base_mm, "T_ref_base"), 1e-3)
        # PyBullet places a body by its base's centre of mass, which sits at an offset from the URDF frame.
        T_frame_com = frames.pose_to_transform(*pb.getDynamicsInfo(self.robot, -1, physicsClientId=self.client)[3:5])
        p, q = frames.transform_to_pose(self.T_ref_base_m @ T_frame_com)
        pb.resetBasePositionAndOrientation(self.robot, p, q, physicsClientId=self.client)
        if OPERATION in self._cart:
            cart, height = self._cart[OPERATION]
            p, q = frames.transform_to_pose(self.T_ref_base_m @ frames.make_transform(t=[0.0, 0.0, -height / 2]))
            pb.resetBasePositionAndOrientation(cart, p, q, physicsClientId=self.client)

    def cart_touches_static(self) -> bool:
        """Whether the operation robot's cart stands in the table or another cart."""
        if OPERATION not in self._cart:
            return False
        cart = self._cart[OPERATION][0]
        others = [b for b, n in self.names.items() if n in ("table", "navigation robot cart")]
        return any(pb.getClosestPoints(cart, b, 0.0, physicsClientId=self.client) for b in others)

    def set_navigation(self, T_ref_cam_mm: np.ndarray, q_nav_rad: np.ndarray, T_base_cam_m: np.ndarray) -> None:
        """The navigation robot from the tracker (camera in ``ref``) and its joint readings (camera in its base)."""
        T_ref_base = frames.scale_translation(T_ref_cam_mm, 1e-3) @ frames.invert(T_base_cam_m)
        body = self._load_robot("navigation robot", self.model.tracker_camera, T_ref_base, fixed=True)
        _, joints = arm_indices(self.client, body, panda.ARM_JOINTS)
        pb.resetJointStatesMultiDof(body, joints, [[float(v)] for v in q_nav_rad], physicsClientId=self.client)
        self.navigation = body
        self.navigation_pose = (T_ref_base.copy(), np.asarray(q_nav_rad, dtype=np.float64).copy())

    def set_carm(self, T_ref_source_mm: np.ndarray) -> None:
        """Place the C-arm by its focal spot (tracked marker composed with the C-arm calibration)."""
        self.carm_source_ref_mm = np.asarray(T_ref_source_mm, dtype=np.float64).copy()
        T = frames.scale_translation(T_ref_source_mm, 1e-3) @ frames.invert(self.model.T_carm_source_m)
        if self.carm is None:
            boxes = [(s, T_box, _GREY) for s, T_box in self.model.carm_boxes_m]
            self.carm, _ = compound_box_body(self.client, boxes, T)
            self._add(self.carm, "C-arm")
        else:
            p, q = frames.transform_to_pose(T)
            pb.resetBasePositionAndOrientation(self.carm, p, q, physicsClientId=self.client)

    def park_carm(self) -> None:
        """The C-arm rolled away from the table: out of the twin's collision world until it is placed again."""
        if self.carm is not None:
            pb.resetBasePositionAndOrientation(self.carm, [0.0, 0.0, -100.0], [0, 0, 0, 1], physicsClientId=self.client)
        self.carm_source_ref_mm = None

    def set_envelope(self, envelope: PatientEnvelope, continuations: list[PatientEnvelope] | None = None) -> None:
        """The touched envelope and the body's continuations past the touched patch (see
        :meth:`PatientEnvelope.continuations`): the guide may come within ``guide_to_patient_mm`` of them."""
        self.envelope = envelope
        for env in [envelope, *(continuations or [])]:
            self.envelope_meshes.append((env.name, env.vertices_ref_mm.copy(), np.asarray(env.faces).copy()))
            v = env.vertices_ref_mm * 1e-3
            col = pb.createCollisionShape(pb.GEOM_MESH, vertices=v.tolist(), physicsClientId=self.client)  # convex hull
            vis = pb.createVisualShape(pb.GEOM_MESH, vertices=v.tolist(), indices=env.faces.reshape(-1).tolist(),
                                       rgbaColor=list(_SKIN), physicsClientId=self.client)
            self._add(pb.createMultiBody(0, col, vis, physicsClientId=self.client), env.name)

    @property
    def bodies(self) -> list[str]:
        return sorted(n for b, n in self.names.items() if b != self.robot)

    # ---- queries ----------------------------------------------------------------------
    def set_joints(self, q_rad: np.ndarray) -> None:
        pb.resetJointStatesMultiDof(self.robot, self.joints, [[float(v)] for v in q_rad], physicsClientId=self.client)

    def tool_pose_mm(self, q_rad: np.ndarray, link: str = panda.TOOL_TIP_LINK) -> np.ndarray:
        """``T_ref_link`` (mm) of the nominal robot at ``q_rad`` (the needle guide's tip by default)."""
        self.set_joints(q_rad)
        return frames.scale_translation(link_pose_m(self.client, self.robot, self.link_index[link]), 1000.0)

    def _required_mm(self, link: int, body: int) -> float:
        s = self.settings
        patient = self.names.get(body, "").startswith("patient envelope")
        return s.guide_to_patient_mm if (link in self._guide_links and patient) else s.robot_mm

    def contacts(self, q_rad: np.ndarray) -> tuple[Contact | None, float]:
        """The worst pair closer than its clearance at ``q_rad`` (None when all clear), and the smallest clearance seen."""
        self.set_joints(q_rad)
        pb.performCollisionDetection(physicsClientId=self.client)
        worst, worst_margin, closest = None, 0.0, np.inf
        for c in pb.getContactPoints(bodyA=self.robot, physicsClientId=self.client):
            d_mm, req = c[8] * 1000.0, self._required_mm(c[3], c[2])
            closest = min(closest, d_mm)
            if d_mm - req < worst_margin:
                worst_margin = d_mm - req
                worst = Contact(self.names.get(c[2], f"body {c[2]}"), self.link_name.get(c[3], str(c[3])), d_mm, req,
                                np.asarray(c[5]) * 1000.0)
        return worst, closest

    def check_path(self, waypoints_rad: Sequence[np.ndarray] | np.ndarray) -> PathCheck:
        """Check straight joint segments through ``waypoints_rad`` densely; stops at the first configuration too close."""
        t0 = time.perf_counter()
        qs, where = densify(waypoints_rad, self.settings.max_step_rad)
        closest = np.inf
        for k, q in enumerate(qs):
            hit, d = self.contacts(q)
            closest = min(closest, d)
            if hit is not None:
                return PathCheck(False, k + 1, time.perf_counter() - t0, hit, float(where[k]), closest, self.bodies)
        return PathCheck(True, len(qs), time.perf_counter() - t0, None, None, closest, self.bodies)

    def close(self) -> None:
        if pb.isConnected(self.client):
            pb.disconnect(self.client)

    def __enter__(self) -> TwinWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
