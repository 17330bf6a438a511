"""The patient model: one watertight mesh per complete vertebra and the skin, cached by content.

Everything here is in the ``ct`` frame (RAS+, mm). Placing the patient in the room is the
scene's job (:mod:`twinsim.sim.world`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from twinsim.anatomy.ct import OUTSIDE_FOV_HU, PatientDataError, load_ct
from twinsim.anatomy.labels import level_sort_key, normalise_level
from twinsim.anatomy.meshing import SurfaceMesh, largest_component, mask_to_mesh
from twinsim.anatomy.wheel_data import content_digest
from twinsim.paths import cache_home
from twinsim.report import atomic_folder

# Bump when the meshing changes what it produces, so stale caches are not reused.
MESHING_VERSION = 4


@dataclass(frozen=True)
class MeshingParams:
    vertebra_vertices: int = 5000
    skin_vertices: int = 20000
    smooth_sigma_mm: float = 0.7
    taubin_iterations: int = 10
    skin_threshold_hu: float = -400.0
    skin_voxel_mm: float = 2.0  # the skin is meshed on a coarser grid: it is for collisions


@dataclass
class Patient:
    name: str
    content_key: str
    vertebrae: dict[str, SurfaceMesh]  # complete vertebrae, ct frame, mm
    skin: SurfaceMesh  # ct frame, mm
    cut_levels: dict[str, list[str]] = field(default_factory=dict)  # level -> FOV edges touched
    ct_shape: tuple[int, int, int] = (0, 0, 0)
    affine_mm: np.ndarray = field(default_factory=lambda: np.eye(4))
    from_cache: bool = False
    skin_edges: list[str] = field(default_factory=list)  # faces of the CT volume the body touches (its skin cut there)

    def require_back_in_view(self) -> None:
        """A room needs the patient's back (where the needles enter and the pointer touches) inside the CT."""
        # One flank at the edge is common (an arm or a hip at the scanner's field of view); the back, or both flanks, is a crop.
        cut = [e for e in self.skin_edges if e in ("posterior", "left", "right")]
        if "posterior" in cut or {"left", "right"} <= set(cut):
            raise PatientDataError(
                f"the CT of {self.name} does not hold the patient's skin: the body runs out of the field of view at its "
                f"{', '.join(cut)} side(s); a room needs the back and flanks in the CT (a crop around the spine can be "
                "reconstructed and planned, `twinsim bench plan`, but not rehearsed)")

    @property
    def levels(self) -> list[str]:
        return sorted(self.vertebrae, key=level_sort_key)

    def vertebra(self, level: str) -> SurfaceMesh:
        lvl = normalise_level(level) or level
        if lvl not in self.vertebrae:
            if lvl in self.cut_levels:
                raise PatientDataError(
                    f"vertebra {lvl} is cut by the CT field of view (touches the "
                    f"{', '.join(self.cut_levels[lvl])} edge); complete: {', '.join(self.levels)}"
                )
            raise PatientDataError(f"vertebra {level} is not in the label map; complete: {', '.join(self.levels)}")
        return self.vertebrae[lvl]


def body_mask(hu: np.ndarray, affine_mm: np.ndarray, threshold_hu: float) -> np.ndarray:
    """The patient's body: tissue above ``threshold_hu``, the largest component, cavities filled.

    A morphological opening first cuts the thin links (blankets, cables, the scanner couch)
    that would otherwise join other objects to the body.
    """
    spacing = np.linalg.norm(affine_mm[:3, :3], axis=0)
    tissue = (hu > threshold_hu) & (hu > OUTSIDE_FOV_HU)
    radius_vox = np.maximum(1, np.round(3.0 / spacing)).astype(int)
    struct = np.ones(tuple(2 * r + 1 for r in radius_vox), dtype=bool)
    opened = ndimage.binary_opening(tissue, structure=struct)
    body = largest_component(opened)
    # Lungs and bowel gas are inside the body: fill them slice by slice (axial), then in 3D.
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return ndimage.binary_fill_holes(body)


def _faces_touched(body: np.ndarray, min_fraction: float = 0.02) -> list[str]:
    """Faces of the (canonical RAS) volume that the body covers over more than ``min_fraction`` of their area.

    The body always meets the top and bottom slices of an axial scan; a body that also fills a
    side face was cut there by the field of view (a crop around the spine).
    """
    names = (("right", "left"), ("posterior", "anterior"), ("inferior", "superior"))
    out = []
    for axis in range(3):
        for end, name in zip((0, -1), names[axis], strict=True):
            face = np.take(body, end, axis=axis)
            if face.mean() > min_fraction:
                out.append(name)
    return out


def _isotropic(mask: np.ndarray, affine_mm: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The mask resampled to cubic voxels of ``voxel_mm``: thick slices leave steps whose decimation is slow and folds."""
    spacing = np.linalg.norm(affine_mm[:3, :3], axis=0)
    factor = spacing / voxel_mm
    if np.allclose(factor, 1.0, atol=0.05):
        return mask, affine_mm
    out = ndimage.zoom(mask.astype(np.float32), factor, order=1) > 0.5
    step = (np.array(mask.shape) - 1) / np.maximum(np.array(out.shape) - 1, 1)  # old voxels per new voxel
    aff = affine_mm.copy()
    aff[:3, :3] = affine_mm[:3, :3] * step
    return out, aff


def _downsample(volume: np.ndarray, affine_mm: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Every n-th voxel so the spacing approaches ``voxel_mm`` (the skin needs no finer grid)."""
    spacing = np.linalg.norm(affine_mm[:3, :3], axis=0)
    step = np.maximum(1, np.floor(voxel_mm / spacing)).astype(int)
    small = volume[:: step[0], :: step[1], :: step[2]]
    aff = affine_mm.copy()
    aff[:3, :3] = affine_mm[:3, :3] * step
    return small, aff


def _cache_key(ct_path: Path, labels_path: Path, label_table: Path | None, params: MeshingParams) -> str:
    return content_digest([ct_path, labels_path, label_table], json.dumps(asdict(params), sort_keys=True),
                          f"meshing-v{MESHING_VERSION}")


def _load_cached(path: Path, name: str, key: str) -> Patient | None:
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        verts = {lvl: SurfaceMesh.load(path / f"{lvl}.npz") for lvl in meta["levels"]}
        skin = SurfaceMesh.load(path / "skin.npz")
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache entry is rebuilt, not trusted
    return Patient(
        name=name,
        content_key=key,
        vertebrae=verts,
        skin=skin,
        cut_levels=meta["cut_levels"],
        ct_shape=tuple(meta["ct_shape"]),
        affine_mm=np.array(meta["affine_mm"]),
        from_cache=True,
        skin_edges=list(meta.get("skin_edges", [])),
    )


def _store(path: Path, patient: Patient) -> None:
    """Write the cache entry to a temporary folder and rename it in one step."""
    with atomic_folder(path) as tmp:
        for lvl, mesh in patient.vertebrae.items():
            mesh.save(tmp / f"{lvl}.npz")
        patient.skin.save(tmp / "skin.npz")
        meta = {
            "levels": patient.levels,
            "cut_levels": patient.cut_levels,
            "ct_shape": list(patient.ct_shape),
            "affine_mm": patient.affine_mm.tolist(),
            "skin_edges": patient.skin_edges,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def build_patient(
    ct_path: str | Path,
    labels_path: str | Path,
    label_table: str | Path | None = None,
    name: str | None = None,
    require_levels: list[str] | None = None,
    params: MeshingParams | None = None,
    cache_dir: Path | None = None,
    progress: bool | None = None,
) -> Patient:
    """Build (or load from cache) the patient meshes from a CT and its label map.

    ``require_levels`` are vertebrae the caller needs (e.g. the target level): each must be
    present and complete, or a :class:`PatientDataError` says which and why.
    ``progress=None`` shows a progress bar only on a terminal.
    """
    ct_path, labels_path = Path(ct_path), Path(labels_path)
    label_table = Path(label_table) if label_table else None
    for p, what in ((ct_path, "CT"), (labels_path, "label map"), (label_table, "label table")):
        if p is not None and not p.is_file():
            raise PatientDataError(f"{what} file not found: {p}")
    params = params or MeshingParams()
    name = name or ct_path.name.split(".")[0]
    key = _cache_key(ct_path, labels_path, label_table, params)
    entry = (cache_dir or cache_home() / "patients") / key[:24]

    patient = _load_cached(entry, name, key)
    if patient is None:
        ct = load_ct(ct_path, labels_path, label_table)
        levels = ct.complete_levels
        if not levels:
            raise PatientDataError(f"label map {labels_path} holds no complete vertebra")
        meshes: dict[str, SurfaceMesh] = {}
        bar = tqdm(levels + ["skin"], desc="meshing patient", unit="surface", disable=None if progress is None else not progress)
        for item in bar:
            bar.set_postfix_str(item)
            if item == "skin":
                hu_small, aff = _downsample(ct.hu, ct.affine_mm, params.skin_voxel_mm)
                body = body_mask(hu_small, aff, params.skin_threshold_hu)
                skin_edges = _faces_touched(body)
                body, aff = _isotropic(body, aff, params.skin_voxel_mm)
                # The skin is a collision and touch surface: a fold of the smoothing where a field of view cut the body
                # harms neither, and the self-intersection test cost half a minute a try on a cut CT's 20000 vertices.
                skin = mask_to_mesh(body, aff, params.skin_vertices, smooth_sigma_mm=params.skin_voxel_mm,
                                    taubin_iterations=params.taubin_iterations, self_intersection_check=False)
            else:
                meshes[item] = mask_to_mesh(
                    ct.vertebra_mask(item), ct.affine_mm, params.vertebra_vertices,
                    params.smooth_sigma_mm, params.taubin_iterations,
                )
        patient = Patient(
            name=name,
            content_key=key,
            vertebrae=meshes,
            skin=skin,
            cut_levels={lvl: e for lvl, e in ct.edges_of.items() if e},
            ct_shape=tuple(int(s) for s in ct.hu.shape),
            affine_mm=ct.affine_mm,
            skin_edges=skin_edges,
        )
        _store(entry, patient)
    for level in require_levels or []:
        patient.vertebra(level)
    return patient
