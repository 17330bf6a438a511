"""Raw vertebra surfaces for shape-model training, read from a data folder like ``../shared/data``.

Everything is returned in millimetres. Sources and their quirks:

- ``verse-L1/``: VerSe 2020 L1 surfaces (CT world coordinates, LPS) with landmarks A..J, plus
  the template ``ref_20.ply``. Landmarks read off the template: A/D left/right transverse
  process tips, E/F superior and B/C inferior articular processes (left/right), G spinous
  process tip, H/I/J anterior body wall from top to bottom.
- ``artisynth-lumbar/``: L1..L5 of one subject, Wavefront OBJ in **metres**.
- ``clouthier-lumbar-mean/``: mean L2..L5 as one mesh (CSV, faces 1-based); split into its
  four connected components, ordered top to bottom (its z axis is superior).
- ``ctacardio-T1-L3/``: T1..L3 of one person, STL in CT scanner coordinates (LPS, checked:
  the rigid fit to the example CT's vertebrae flips x and y); four files carry loose fragments,
  so only the largest connected component is kept.
- ``verse004-T9-L5/``: VerSe's expert label map of ``sub-verse004`` (labels 16..24 = T9..L5),
  meshed with the project's own meshing (largest component, light smoothing).

Every shape carries the person it comes from, so that evaluation can leave a whole person out.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d

from twinsim.errors import TwinsimError

LANDMARK_IDS = tuple("ABCDEFGHIJ")
# LPS (VerSe) to RAS (the project's ct convention): flip x and y.
T_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ShapeDataError(TwinsimError, ValueError):
    """The shape data folder is missing files or holds something unreadable."""


@dataclass
class RawShape:
    name: str
    level: str
    source: str  # "verse", "artisynth", "clouthier"
    vertices_mm: np.ndarray
    faces: np.ndarray
    landmarks_mm: dict[str, np.ndarray] | None = None
    person: str = ""  # who the shape comes from: shapes of one person are not independent

    def mesh(self) -> o3d.geometry.TriangleMesh:
        return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(self.vertices_mm), o3d.utility.Vector3iVector(self.faces))

    def transformed(self, T: np.ndarray) -> RawShape:
        lm = {k: T[:3, :3] @ v + T[:3, 3] for k, v in self.landmarks_mm.items()} if self.landmarks_mm else None
        return RawShape(self.name, self.level, self.source, self.vertices_mm @ T[:3, :3].T + T[:3, 3], self.faces, lm,
                        self.person)


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
        person = ply.stem.split("_")[0]  # sub-verseNNN
        shapes.append(RawShape(ply.stem, "L1", "verse", v, f, read_landmarks(ply.with_suffix(".json")), person)
                      .transformed(T_RAS_LPS))
    if not shapes:
        raise ShapeDataError(f"no sub-verse*.ply meshes in {d}")
    return shapes


def load_artisynth(data_dir: Path, levels: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")) -> list[RawShape]:
    d = Path(data_dir) / "artisynth-lumbar"
    out = []
    for lvl in levels:
        v, f = _read_mesh(d / f"{lvl}.obj", scale=1000.0)  # metres -> mm
        out.append(RawShape(f"artisynth_{lvl}", lvl, "artisynth", v, f, person="visible-human-male"))
    return out


def load_clouthier(data_dir: Path, levels: tuple[str, ...] = ("L2", "L3", "L4", "L5")) -> list[RawShape]:
    if not levels:
        return []
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
    return [RawShape(f"clouthier_{lvl}", lvl, "clouthier", v, f, person="clouthier-mean-of-87")
            for (v, f), lvl in zip(parts, ("L2", "L3", "L4", "L5"), strict=True) if lvl in levels]


def _largest_component(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f))
    cluster, n_tri, _ = m.cluster_connected_triangles()
    cluster = np.asarray(cluster)
    m.remove_triangles_by_mask(cluster != int(np.argmax(np.asarray(n_tri))))
    m.remove_unreferenced_vertices()
    return np.asarray(m.vertices).copy(), np.asarray(m.triangles).astype(np.int32).copy()


CTACARDIO_LEVELS = tuple(f"T{i}" for i in range(1, 13)) + ("L1", "L2", "L3")


def load_ctacardio(data_dir: Path, levels: tuple[str, ...] = CTACARDIO_LEVELS) -> list[RawShape]:
    d = Path(data_dir) / "ctacardio-T1-L3"
    out = []
    for lvl in levels:
        v, f = _largest_component(*_read_mesh(d / f"{lvl}.stl"))
        out.append(RawShape(f"ctacardio_{lvl}", lvl, "ctacardio", v, f, person="ctacardio").transformed(T_RAS_LPS))
    return out


# VerSe's label numbers: 1-7 cervical, 8-19 T1-T12, 20-25 L1-L6.
VERSE_LABEL_LEVELS = {8 + i: f"T{i + 1}" for i in range(12)} | {20 + i: f"L{i + 1}" for i in range(5)}
VERSE004_LEVELS = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")


def load_verse004(data_dir: Path, levels: tuple[str, ...] = VERSE004_LEVELS, target_vertices: int = 12000) -> list[RawShape]:
    """Each labelled vertebra meshed by marching cubes (``anatomy.meshing``), in RAS millimetres."""
    if not levels:
        return []
    meshes = _verse004_meshes(str(Path(data_dir).resolve()), target_vertices)
    out = []
    for lvl in levels:
        if lvl not in meshes:
            raise ShapeDataError(f"the verse004 label map has no {lvl} (it holds {', '.join(meshes)})")
        v, f = meshes[lvl]
        out.append(RawShape(f"verse004_{lvl}", lvl, "verse004", v.copy(), f.copy(), person="sub-verse004"))
    return out


@functools.lru_cache(maxsize=2)
def _verse004_meshes(data_dir: str, target_vertices: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every level of the label map, meshed once per process (about 4 s a level)."""
    import nibabel as nib

    from twinsim.anatomy.meshing import MeshingError, mask_to_mesh

    path = Path(data_dir) / "verse004-T9-L5" / "sub-verse004_seg-vert_msk.nii.gz"
    if not path.is_file():
        raise ShapeDataError(f"label map not found: {path}")
    try:
        img = nib.load(str(path))
        labels = np.asarray(img.dataobj).astype(np.int16)
    except Exception as exc:  # nibabel raises several types for a damaged file
        raise ShapeDataError(f"label map {path} is unreadable: {exc}") from exc
    out = {}
    for k in np.unique(labels):
        lvl = VERSE_LABEL_LEVELS.get(int(k))
        if lvl is None:
            continue
        try:
            # Taubin smoothing folds this label map's thin laminae through each other: left off.
            m = mask_to_mesh(labels == k, img.affine, target_vertices, taubin_iterations=0)
        except MeshingError as exc:
            raise ShapeDataError(f"{lvl} in {path} could not be meshed: {exc}") from exc
        out[lvl] = (m.vertices_mm, m.faces)
    return out


def load_training_shapes(data_dir: Path, model: str) -> list[RawShape]:
    """Every shape the data folder offers for a model's levels (``twinsim.shape.regions``)."""
    from twinsim.shape.regions import MODEL_LEVELS

    if model not in MODEL_LEVELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODEL_LEVELS)}")
    levels = MODEL_LEVELS[model]
    shapes: list[RawShape] = []
    if "L1" in levels:
        shapes += load_verse(data_dir)
    shapes += load_artisynth(data_dir, tuple(lv for lv in levels if lv in ("L1", "L2", "L3", "L4", "L5")))
    shapes += load_clouthier(data_dir, tuple(lv for lv in levels if lv in ("L2", "L3", "L4", "L5")))
    shapes += load_ctacardio(data_dir, tuple(lv for lv in levels if lv in CTACARDIO_LEVELS))
    shapes += load_verse004(data_dir, tuple(lv for lv in levels if lv in VERSE004_LEVELS))
    return shapes
