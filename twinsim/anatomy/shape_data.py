"""Raw vertebra surfaces for shape-model training, read from a data folder like ``../shared/data``.

Everything is returned in millimetres. Sources and their quirks:

- ``verse-L1/``: VerSe 2020 L1 surfaces (CT world coordinates, LPS) with landmarks A..J, plus
  the template ``ref_20.ply``. Landmarks read off the template: A/D left/right transverse
  process tips, E/F superior and B/C inferior articular processes (left/right), G spinous
  process tip, H/I/J anterior body wall from top to bottom.
- ``artisynth-lumbar/``: L1..L5 of one subject, Wavefront OBJ in **metres**.
- ``clouthier-lumbar-mean/``: mean L2..L5 as one mesh (CSV, faces 1-based); split into its
  four connected components, ordered top to bottom (its z axis is superior).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d

LANDMARK_IDS = tuple("ABCDEFGHIJ")
# LPS (VerSe) to RAS (the project's ct convention): flip x and y.
T_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ShapeDataError(ValueError):
    """The shape data folder is missing files or holds something unreadable."""


@dataclass
class RawShape:
    name: str
    level: str
    source: str  # "verse", "artisynth", "clouthier"
    vertices_mm: np.ndarray
    faces: np.ndarray
    landmarks_mm: dict[str, np.ndarray] | None = None

    def mesh(self) -> o3d.geometry.TriangleMesh:
        return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(self.vertices_mm), o3d.utility.Vector3iVector(self.faces))

    def transformed(self, T: np.ndarray) -> RawShape:
        lm = {k: T[:3, :3] @ v + T[:3, 3] for k, v in self.landmarks_mm.items()} if self.landmarks_mm else None
        return RawShape(self.name, self.level, self.source, self.vertices_mm @ T[:3, :3].T + T[:3, 3], self.faces, lm)


def _read_mesh(path: Path, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ShapeDataError(f"mesh not found: {path}")
    m = o3d.io.read_triangle_mesh(str(path))
    if len(m.triangles) == 0:
        raise ShapeDataError(f"mesh {path} has no triangles (unreadable or empty)")
    m.remove_duplicated_vertices()
    return np.asarray(m.vertices) * scale, np.asarray(m.triangles).astype(np.int32)


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    try:
        items = json.loads(path.read_text())
        lm = {d["id"]: np.asarray(d["coordinates"], dtype=np.float64) for d in items}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ShapeDataError(f"landmark file {path} is unreadable: {exc}") from exc
    missing = [k for k in LANDMARK_IDS if k not in lm]
    if missing:
        raise ShapeDataError(f"landmark file {path} lacks {', '.join(missing)}")
    return lm


def load_template(data_dir: Path) -> RawShape:
    """The VerSe template ``ref_20`` in RAS millimetres."""
    d = Path(data_dir) / "verse-L1"
    v, f = _read_mesh(d / "ref_20.ply")
    return RawShape("ref_20", "L1", "verse", v, f, read_landmarks(d / "ref_20.json")).transformed(T_RAS_LPS)


def load_verse(data_dir: Path) -> list[RawShape]:
    d = Path(data_dir) / "verse-L1"
    shapes = []
    for ply in sorted(d.glob("sub-verse*.ply")):
        v, f = _read_mesh(ply)
        shapes.append(RawShape(ply.stem, "L1", "verse", v, f, read_landmarks(ply.with_suffix(".json"))).transformed(T_RAS_LPS))
    if not shapes:
        raise ShapeDataError(f"no sub-verse*.ply meshes in {d}")
    return shapes


def load_artisynth(data_dir: Path, levels: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")) -> list[RawShape]:
    d = Path(data_dir) / "artisynth-lumbar"
    out = []
    for lvl in levels:
        v, f = _read_mesh(d / f"{lvl}.obj", scale=1000.0)  # metres -> mm
        out.append(RawShape(f"artisynth_{lvl}", lvl, "artisynth", v, f))
    return out


def load_clouthier(data_dir: Path) -> list[RawShape]:
    d = Path(data_dir) / "clouthier-lumbar-mean"
    try:
        v = np.loadtxt(d / "meanMesh_vertices.csv", delimiter=",")
        f = np.loadtxt(d / "meanMesh_faces.csv", delimiter=",").astype(np.int64) - 1
    except (OSError, ValueError) as exc:
        raise ShapeDataError(f"Clouthier mean mesh in {d} is unreadable: {exc}") from exc
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    cluster, _, _ = m.cluster_connected_triangles()
    cluster = np.asarray(cluster)
    parts = []
    for k in np.unique(cluster):
        sub = o3d.geometry.TriangleMesh(m)
        sub.remove_triangles_by_mask(cluster != k)
        sub.remove_unreferenced_vertices()
        parts.append((np.asarray(sub.vertices).copy(), np.asarray(sub.triangles).astype(np.int32).copy()))
    if len(parts) != 4:
        raise ShapeDataError(f"Clouthier mean mesh should split into 4 vertebrae, found {len(parts)}")
    parts.sort(key=lambda p: -p[0][:, 2].mean())  # superior first: L2, L3, L4, L5
    return [RawShape(f"clouthier_{lvl}", lvl, "clouthier", v, f) for (v, f), lvl in zip(parts, ("L2", "L3", "L4", "L5"), strict=True)]


def load_training_shapes(data_dir: Path, model: str) -> list[RawShape]:
    """``model="L1"``: VerSe L1s + ArtiSynth L1. ``model="lumbar"``: all L1..L5 shapes."""
    if model == "L1":
        return load_verse(data_dir) + load_artisynth(data_dir, ("L1",))
    if model == "lumbar":
        return load_verse(data_dir) + load_artisynth(data_dir) + load_clouthier(data_dir)
    raise ValueError(f"unknown model {model!r}: 'L1' or 'lumbar'")
