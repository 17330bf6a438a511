"""The one SE(3) module of twinsim: every rigid transform in the project goes through here.

Naming: ``T_<to>_<from>`` is a 4x4 homogeneous matrix that maps coordinates expressed in frame
``<from>`` into frame ``<to>``, so ``T_world_ct @ p_ct = p_world`` and
``T_a_c = T_a_b @ T_b_c``. Translations carry the unit of the module boundary they cross; the
functions here are unit-agnostic except :func:`scale_translation`, which converts between them.
Quaternions follow PyBullet's ``(x, y, z, w)`` order.

Named frames: ``world`` (OR table, metres, z up), ``ct`` (CT scanner frame, RAS+, mm), ``ref``
(patient reference marker), ``cam`` (tracker camera), ``carm`` (isocenter, z source to
detector), ``source``, ``detector``, ``base_op``, ``flange_op``, ``tool`` (needle-guide tip, z
along the guide), ``base_nav``, ``flange_nav``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim.errors import TwinsimError


class FrameError(TwinsimError, ValueError):
    """A transform is malformed or a frame path does not exist."""


def as_transform(T: np.ndarray | Sequence[Sequence[float]], name: str = "T") -> np.ndarray:
    """Validate a 4x4 rigid transform and return it as float64."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise FrameError(f"{name} must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise FrameError(f"{name} contains NaN or infinite values")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise FrameError(f"{name} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise FrameError(f"{name} rotation block is not a proper rotation")
    return T


def make_transform(R: np.ndarray | None = None, t: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Build ``T`` from a 3x3 rotation (identity if None) and a translation (zero if None)."""
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = np.asarray(R, dtype=np.float64)
    if t is not None:
        T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Exact rigid inverse (R^T, -R^T t), cheaper and better conditioned than ``np.linalg.inv``."""
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def compose(*Ts: np.ndarray) -> np.ndarray:
    """``compose(T_a_b, T_b_c, T_c_d) == T_a_d``."""
    out = np.eye(4)
    for T in Ts:
        out = out @ T
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``T`` to an (N, 3) array of points (or a single 3-vector)."""
    p = np.asarray(points, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def rotation_about_axis(axis: Sequence[float] | np.ndarray, angle_rad: float) -> np.ndarray:
    """3x3 rotation of ``angle_rad`` about ``axis`` (right-hand rule)."""
    a = np.asarray(axis, dtype=np.float64)
    n = np.linalg.norm(a)
    if n < 1e-12:
        raise FrameError("rotation axis has zero length")
    return Rotation.from_rotvec(a / n * angle_rad).as_matrix()


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` to direction ``b``."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    axis = np.cross(a, b)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        if a @ b > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return rotation_about_axis(perp / np.linalg.norm(perp), np.pi)
    return rotation_about_axis(axis / s, float(np.arctan2(s, a @ b)))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two directions, degrees."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), a @ b)))


def perpendicular_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing each unit ``u`` ((3,) or (N, 3)) to a right-handed orthonormal basis."""
    u = np.asarray(u, dtype=np.float64)
    helper = np.where(np.abs(u[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    return e1, np.cross(u, e1)


def rpy_to_matrix(rpy_rad: Sequence[float]) -> np.ndarray:
    """Fixed-axis roll-pitch-yaw (URDF/PyBullet convention: R = Rz(yaw) Ry(pitch) Rx(roll))."""
    return Rotation.from_euler("xyz", rpy_rad).as_matrix()


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(R).as_quat()


def quat_xyzw_to_matrix(q: Sequence[float]) -> np.ndarray:
    return Rotation.from_quat(np.asarray(q, dtype=np.float64)).as_matrix()


def pose_to_transform(position: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """PyBullet ``(position, orientation)`` pair to ``T``."""
    return make_transform(quat_xyzw_to_matrix(quat_xyzw), position)


def to_wxyz_position_m(T_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T`` (mm) as a scalar-first quaternion and a position in metres (viser's and three.js's convention)."""
    q = matrix_to_quat_xyzw(T_mm[:3, :3])
    return np.array([q[3], q[0], q[1], q[2]]), np.asarray(T_mm[:3, 3], dtype=np.float64) * 1e-3


def from_wxyz_position_m(wxyz: Sequence[float], position_m: Sequence[float]) -> np.ndarray:
    """The inverse of :func:`to_wxyz_position_m`: ``T`` in mm."""
    w, x, y, z = (float(v) for v in wxyz)
    return make_transform(quat_xyzw_to_matrix([x, y, z, w]), np.asarray(position_m, dtype=np.float64) * 1000.0)


def transform_to_pose(T: np.ndarray) -> tuple[list[float], list[float]]:
    """``T`` to a PyBullet ``(position, quaternion xyzw)`` pair."""
    return T[:3, 3].tolist(), matrix_to_quat_xyzw(T[:3, :3]).tolist()


def scale_translation(T: np.ndarray, factor: float) -> np.ndarray:
    """Change the length unit of ``T`` (e.g. ``factor=1e-3`` for mm -> m)."""
    out = np.array(T, dtype=np.float64, copy=True)
    out[:3, 3] *= factor
    return out


def rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rigid ``T`` with ``T(source) ~ target`` for corresponding (N, 3) points (Kabsch)."""
    cs, ct = source.mean(0), target.mean(0)
    U, _, Vt = np.linalg.svd((source - cs).T @ (target - ct))
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return make_transform(R, ct - R @ cs)


class FrameGraph:
    """Named frames linked by transforms; any ``T_<to>_<from>`` is found by walking the graph.

    Edges are stored once and inverted on demand, so the graph never holds two copies of the
    same relation that could drift apart.
    """

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = {}

    def set(self, to: str, frm: str, T_to_from: np.ndarray) -> None:
        T = as_transform(T_to_from, f"T_{to}_{frm}")
        self._edges.setdefault(to, {})[frm] = T
        self._edges.setdefault(frm, {}).pop(to, None)

    @property
    def frames(self) -> set[str]:
        names = set(self._edges)
        for d in self._edges.values():
            names.update(d)
        return names

    def _neighbours(self, f: str) -> list[tuple[str, np.ndarray]]:
        """Edges out of ``f`` as (other, T_f_other)."""
        out = [(other, T) for other, T in self._edges.get(f, {}).items()]
        for to, d in self._edges.items():
            if f in d:
                out.append((to, invert(d[f])))
        return out

    def get(self, to: str, frm: str) -> np.ndarray:
        """``T_<to>_<frm>``, composed along the shortest path of known edges."""
        if to == frm:
            return np.eye(4)
        for name in (to, frm):
            if name not in self.frames:
                raise FrameError(f"unknown frame {name!r}; known: {sorted(self.frames)}")
        # BFS from `to`, accumulating T_to_x.
        seen = {to: np.eye(4)}
        queue = deque([to])
        while queue:
            f = queue.popleft()
            for other, T_f_other in self._neighbours(f):
                if other in seen:
                    continue
                seen[other] = seen[f] @ T_f_other
                if other == frm:
                    return seen[other]
                queue.append(other)
        raise FrameError(f"no chain of transforms links {frm!r} to {to!r}")
