"""The people in the simulated room: they pivot the pointer, hand-guide the robot and touch bone.

Their hands are simulation: they set true poses in the room (see :mod:`twinsim.sim.hand_held`);
the workflow that asked only sees the tracker frames and joint readings taken at each yield.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.anatomy.landmarks import posterior_surface_mm
from twinsim.hal.errors import HalError
from twinsim.hal.interfaces import Arm
from twinsim.hal.ports import unwrap
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.robot import panda
from twinsim.robot.kinematics import IKError, solve_ik
from twinsim.sim import hand_held
from twinsim.sim.world import OperatingRoom, mesh_in_world_m
from twinsim.tracking.calibration import pivot_motion
from twinsim.tracking.tools import POINTER
from twinsim.tracking.vega_sim import SimulatedVega

log = logging.getLogger(__name__)
ClickModel = Callable[[Sequence[ProjectionGeometry], dict[str, np.ndarray], float, int, Sequence[str], str],
                      list[dict[str, np.ndarray]]]


class SimOperator:
    """``landmarks_ct_mm``: where each named landmark is in the CT (the person knows the anatomy)."""

    def __init__(self, room: OperatingRoom, vega: SimulatedVega, landmarks_ct_mm: dict[str, np.ndarray],
                 seed: int = 0, fiducial_fle_mm: float = 1.0, surface_touch_mm: float = 0.3, verbose: bool = False) -> None:
        self.room, self.vega, self.landmarks_ct_mm = room, vega, landmarks_ct_mm
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.fiducial_fle_mm, self.surface_touch_mm, self.verbose = fiducial_fle_mm, surface_touch_mm, verbose
        self.true_tip_mm = np.asarray(room.config.markers[POINTER].get("tip_mm", [0.0, -160.0, -20.0]), dtype=float)
        # The simulated clinician reading X-rays: each image's true geometry (kept by the C-arm), where the
        # landmarks truly are for a level, and how far a click lands from them (at the vertebra).
        self.true_geometry_of: Callable[[Acquisition], ProjectionGeometry] | None = None
        self.landmarks_of_level: Callable[[str], dict[str, np.ndarray]] | None = None
        # How a person's clicks land, given each image's geometry, the true landmarks, the click SD (mm at the
        # vertebra), a seed, the names asked for and the level: evaluation code (the simulated clinician), handed in by the wiring.
        self.click: ClickModel | None = None
        self.click_sigma_mm = 1.0
        self.skin_region_m = (0.18, 0.22)  # half-extents of the traced back: along the spine, across
        self.entry_region_m = (0.06, 0.09)  # ... and of the entry sites over the target, traced with half the touches
        self.unmarked: dict[int, list[str] | None] = {}  # view index -> landmarks not found there (None: all)
        self.acknowledged: list[str] = []  # the interlocks told to the team
        self.approved: list[str] = []  # the motions it let go

    def say(self, message: str) -> None:
        if self.verbose:
            log.info(f"[operator] {message}")

    def approve_motion(self, what: str) -> None:
        """The simulated team lets every checked motion go (kept in ``approved``)."""
        self.approved.append(what)

    def acknowledge(self, message: str) -> None:
        """The simulated team acknowledges at once (kept in ``acknowledged``)."""
        self.acknowledged.append(message)
        self.say(f"{message} (acknowledged)")

    def _pointer(self) -> hand_held.SimulatedTool:
        return hand_held.tool(self.vega, POINTER)

    def pivot_pointer(self, n_poses: int) -> Iterator[int]:
        # A divot on a 15 cm block on the table beside the patient, inside the tracker's volume.
        tc = self.room.config.table
        divot = np.array([0.25, -0.22, tc.top_height_m + 0.15])
        T_divot = hand_held.pointer_pose_touching(divot, self.true_tip_mm, self.vega.T_world_cam_m())
        T_divot[:3, 3] = divot
        t = self._pointer()
        for i, T in enumerate(pivot_motion(T_divot, self.true_tip_mm, n_poses, max_tilt_deg=25.0, seed=self.seed)):
            previous = hand_held.hold(t, T)
            try:
                yield i
            finally:
                t.T_world_tool_m = previous

    def hand_guide_tip_pivot(self, arm: Arm, n_poses: int, rod_extension_mm: float = 0.0,
                             max_tilt_deg: float = 15.0) -> Iterator[int]:
        """Guiding mode, tip (or a rod's tip along the true bore) in a divot where it is now; the arm as built obeys it."""
        name = getattr(unwrap(arm), "name", "operation")
        if name not in self.room.robots:
            raise HalError(name, "the simulated operator can only hand-guide a robot of the simulated room")
        h = self.room.robots[name]
        link = h.link_index[panda.TOOL_TIP_LINK]
        T0 = self.room.link_pose(name, panda.TOOL_TIP_LINK)
        T_tip_pivot = frames.make_transform(t=[0.0, 0.0, rod_extension_mm * 1e-3])  # the tip link's z is the true bore
        q = q_start = self.room.joint_positions(name)
        rng = np.random.default_rng(self.seed)
        done = 0
        try:
            for _ in range(n_poses):
                tilt = Rotation.from_rotvec(np.r_[rng.uniform(-1, 1, 2) * np.deg2rad(max_tilt_deg), rng.uniform(-0.3, 0.3)])
                target = T0 @ T_tip_pivot @ frames.make_transform(tilt.as_matrix()) @ frames.invert(T_tip_pivot)
                try:
                    q = solve_ik(self.room.client, h.body, h.joint_indices, link, target, q, panda.SOFT_LIMITS_RAD)
                except IKError:
                    continue
                self.room.set_joint_positions(name, q)
                yield done
                done += 1
        finally:
            self.room.set_joint_positions(name, q_start)

    def _touch(self, points_world_m: np.ndarray, tilt_deg: float = 10.0) -> Iterator[int]:
        t = self._pointer()
        for i, p in enumerate(np.atleast_2d(points_world_m)):
            T = hand_held.pointer_pose_touching(p, self.true_tip_mm, self.vega.T_world_cam_m(), tilt_deg, self.rng)
            previous = hand_held.hold(t, T)
            try:
                yield i
            finally:
                t.T_world_tool_m = previous

    def touch_landmarks(self, names: Sequence[str]) -> Iterator[str]:
        missing = [n for n in names if n not in self.landmarks_ct_mm]
        if missing:
            raise HalError("operator", f"unknown landmarks {missing}; known: {sorted(self.landmarks_ct_mm)}")
        ct = np.array([self.landmarks_ct_mm[n] for n in names])
        ct = ct + self.rng.normal(0.0, self.fiducial_fle_mm / np.sqrt(3), ct.shape)  # through soft tissue
        for i in self._touch(mesh_in_world_m(self.room.T_world_ct, ct)):
            yield names[i]

    def touch_surface(self, n_points: int) -> Iterator[int]:
        """Random points on the exposed posterior elements of the target level."""
        mesh = self.room.patient.vertebra(self.room.config.patient.target_level)
        keep, _ = posterior_surface_mm(mesh)
        pick = self.rng.choice(keep, min(n_points, len(keep)), replace=False)
        pts = []
        for v in pick:
            around = np.flatnonzero((mesh.faces == v).any(axis=1))
            f = mesh.faces[around[self.rng.integers(len(around))]]
            pts.append(self.rng.dirichlet(np.ones(3)) @ mesh.vertices_mm[f])
        pts = np.array(pts) + self.rng.normal(0, self.surface_touch_mm / np.sqrt(3), (len(pts), 3))
        yield from self._touch(mesh_in_world_m(self.room.T_world_ct, pts))

    def trace_surface(self, surface: str, n_points: int) -> Iterator[int]:
        if surface != "skin":
            raise HalError("operator", f"unknown surface {surface!r}; known: ['skin']")
        pts = self._skin_points(n_points)
        yield from self._touch(pts)

    def _skin_points(self, n: int) -> np.ndarray:
        """Skin points facing up (the prone back) around the target, seen from the world's z."""
        skin = self.room.patient.skin
        v = mesh_in_world_m(self.room.T_world_ct, skin.vertices_mm)
        f = skin.faces
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        normals = np.zeros_like(v)
        for k in range(3):
            np.add.at(normals, f[:, k], fn)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        c = self.room.target_world_m()
        up = normals[:, 2] > 0.3

        def region(along: float, across: float) -> np.ndarray:
            return np.flatnonzero(up & (np.abs(v[:, 0] - c[0]) < along) & (np.abs(v[:, 1] - c[1]) < across))

        # A clinician traces the back around the target, and the entry sites over it more densely: the twin's hull of
        # the touches runs under a convex back between them, by up to 15 mm over a heavy patient's with 40 touches
        # spread evenly, and there the docked guide comes within 15 mm of the skin.
        wide, near = region(*self.skin_region_m), region(*self.entry_region_m)
        n_near = min(n // 2, len(near))
        if len(wide) < n - n_near:
            raise HalError("operator", f"only {len(wide)} skin points face up around the target; asked for {n}")
        first = self.rng.choice(near, n_near, replace=False) if n_near else np.empty(0, dtype=int)
        rest = self.rng.choice(np.setdiff1d(wide, first), n - n_near, replace=False)
        return v[np.concatenate([first, rest])]

    def mark_landmarks(self, acquisitions: Sequence[Acquisition], level: str, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Click each landmark where it truly projects, off by ``click_sigma_mm`` (Gaussian, per axis) at the vertebra."""
        if self.true_geometry_of is None or self.landmarks_of_level is None or self.click is None:
            raise HalError("operator", "this simulated operator was not given the C-arm's true geometries, the anatomy and "
                                       "a click model")
        truth = self.landmarks_of_level(level)
        missing = [n for n in names if n not in truth]
        if missing:
            raise HalError("operator", f"no landmarks {missing} known at {level}")
        geoms = [self.true_geometry_of(a) for a in acquisitions]
        views = self.click(geoms, truth, self.click_sigma_mm, int(self.rng.integers(2**31)), names, level)
        for k, lost in self.unmarked.items():  # landmarks hidden in that view (overlap, a poor exposure)
            if k < len(views):
                views[k] = {n: uv for n, uv in views[k].items() if lost is not None and n not in lost}
        return views
