"""A straight cannula in a closed bone surface: radial clearance along its axis, breaches, the tip.

A cannula of radius ``r`` on the axis from ``entry`` to ``target`` stays inside the bone where,
at every axis point, the bone surface is at least ``r`` away in every direction perpendicular
to the axis (the cylinder's cross-section). That radial distance is the *clearance*: it is
measured by casting rays from axis points (every ``step_mm``) in ``n_directions`` directions
perpendicular to the axis. An axis point outside the bone has a negative clearance (minus its
distance to the surface). The first ``dock_mm`` below the entry are left out: there the
cannula crosses the oblique posterior cortex it docks on, and that surface is not a wall.

Units: millimetres throughout, in whatever frame the surface is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import open3d as o3d

from twinsim.anatomy.meshing import raycasting_scene
from twinsim.errors import TwinsimError
from twinsim.frames import perpendicular_basis


def _tensor(a: np.ndarray) -> Any:
    """float32 points or rays as an Open3D tensor on the CPU (its stubs want dtype and device named)."""
    return o3d.core.Tensor(np.ascontiguousarray(a, dtype=np.float32), o3d.core.Dtype.Float32, o3d.core.Device("CPU:0"))


class PathGeometryError(TwinsimError, ValueError):
    """A path or a surface is degenerate (entry on the target, not finite, empty mesh)."""


@dataclass(frozen=True)
class VertebraAxes:
    """Anatomical directions of one vertebra, from its landmarks (unit vectors, same frame as the mesh)."""

    anterior: np.ndarray
    superior: np.ndarray
    right: np.ndarray
    body_centroid_mm: np.ndarray
    canal_centre_mm: np.ndarray

    @classmethod
    def from_landmarks(cls, pts: dict[str, np.ndarray]) -> VertebraAxes:
        need = ("body_centroid", "canal_centre", "superior_endplate_centre", "inferior_endplate_centre")
        missing = [n for n in need if n not in pts]
        if missing:
            raise PathGeometryError(f"landmarks {', '.join(missing)} are needed for the vertebra's axes")
        a = pts["body_centroid"] - pts["canal_centre"]
        s = pts["superior_endplate_centre"] - pts["inferior_endplate_centre"]
        if np.linalg.norm(a) < 1.0 or np.linalg.norm(s) < 1.0:
            raise PathGeometryError("landmarks are degenerate: body centroid on the canal, or endplates on each other")
        a = a / np.linalg.norm(a)
        s = s - (s @ a) * a
        s /= np.linalg.norm(s)
        return cls(a, s, np.cross(a, s), np.asarray(pts["body_centroid"], float), np.asarray(pts["canal_centre"], float))


@dataclass
class ClearanceProfile:
    depth_mm: np.ndarray  # axis positions from the entry, (n,)
    clearance_mm: np.ndarray  # radial clearance at each, (n,); negative: the axis is outside the bone
    nearest_direction: np.ndarray  # (n, 3) unit, perpendicular to the axis: towards the nearest wall, or the way the axis left the bone

    @property
    def minimum_mm(self) -> float:
        return float(self.clearance_mm.min()) if len(self.clearance_mm) else float("nan")

    @property
    def at_depth_mm(self) -> float:
        return float(self.depth_mm[int(np.argmin(self.clearance_mm))]) if len(self.clearance_mm) else float("nan")


class BoneSurface:
    """A closed surface with the ray queries a cannula check needs (Open3D raycasting)."""

    def __init__(self, vertices_mm: np.ndarray, faces: np.ndarray) -> None:
        v = np.asarray(vertices_mm, dtype=np.float64)
        f = np.asarray(faces)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4 or f.ndim != 2 or f.shape[1] != 3 or len(f) < 4:
            raise PathGeometryError(f"bone surface needs (V, 3) vertices and (F, 3) faces, got {v.shape} and {f.shape}")
        if not np.isfinite(v).all():
            raise PathGeometryError("bone surface has non-finite vertices")
        self.vertices_mm, self.faces = v, f
        self.scene = raycasting_scene(v, f)

    def inside(self, points_mm: np.ndarray) -> np.ndarray:
        q = _tensor(np.asarray(points_mm, dtype=np.float32).reshape(-1, 3))
        return self.scene.compute_occupancy(q, nsamples=3).numpy() > 0.5

    def distance(self, points_mm: np.ndarray) -> np.ndarray:
        q = _tensor(np.asarray(points_mm, dtype=np.float32).reshape(-1, 3))
        return self.scene.compute_distance(q).numpy().astype(np.float64)

    def ray_hit_mm(self, origins_mm: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Distance along each unit direction to the first surface crossing (inf where none)."""
        o = np.asarray(origins_mm, dtype=np.float64).reshape(-1, 3)
        d = np.broadcast_to(np.asarray(directions, dtype=np.float64).reshape(-1, 3), o.shape)
        rays = _tensor(np.hstack([o, d]).astype(np.float32))
        return self.scene.cast_rays(rays)["t_hit"].numpy().astype(np.float64)

    def clearance(self, entry_mm: np.ndarray, target_mm: np.ndarray, dock_mm: float = 5.0, step_mm: float = 0.5,
                  n_directions: int = 24) -> ClearanceProfile:
        entry, target = _as_point(entry_mm, "entry"), _as_point(target_mm, "target")
        length = float(np.linalg.norm(target - entry))
        if length < 1e-6:
            raise PathGeometryError("entry and target coincide: a path needs a direction")
        u = (target - entry) / length
        depths: np.ndarray = np.arange(min(dock_mm, length), length + 1e-9, step_mm)
        if depths[-1] < length - 1e-6:
            depths = np.append(depths, length)
        pts = entry + depths[:, None] * u
        e1, e2 = perpendicular_basis(u)
        ang = np.linspace(0.0, 2 * np.pi, n_directions, endpoint=False)
        dirs = np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2  # (m, 3)
        hits = self.ray_hit_mm(np.repeat(pts, n_directions, axis=0), np.tile(dirs, (len(pts), 1))).reshape(len(pts), n_directions)
        k = np.argmin(hits, axis=1)
        clear = hits[np.arange(len(pts)), k]
        direction = dirs[k]
        outside = ~self.inside(pts)
        if outside.any():
            # The axis has left the bone: the breach is the way it went out, from the nearest surface point to the axis.
            q = _tensor(pts[outside].astype(np.float32))
            closest = self.scene.compute_closest_points(q)["points"].numpy().astype(np.float64)
            away = pts[outside] - closest
            away -= (away @ u)[:, None] * u
            direction[outside] = away / (np.linalg.norm(away, axis=1, keepdims=True) + 1e-12)
            clear[outside] = -np.linalg.norm(pts[outside] - closest, axis=1)
        return ClearanceProfile(depths, clear, direction)


def _as_point(p: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise PathGeometryError(f"{name} must be a finite 3D point in mm, got {p!r}")
    return a
