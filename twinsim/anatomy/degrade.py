"""A CT made to differ the way clinical CTs differ: thicker slices, a shorter field of view, a heavier body.

The patient suite (``twinsim bench patients``) uses these to test that nothing is tuned to one CT.
Each variant is written once as a CT + label-map pair of NIfTI files in the cache, keyed by the
source files' content and the settings, and then read like any patient's files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from twinsim.anatomy.ct import OUTSIDE_FOV_HU, PatientDataError, load_ct
from twinsim.anatomy.labels import normalise_level
from twinsim.anatomy.wheel_data import content_digest
from twinsim.paths import cache_home
from twinsim.report import atomic_folder

DEGRADE_VERSION = 1
AIR_HU = -1000.0


@dataclass(frozen=True)
class Degradation:
    """What to change; ``None`` leaves that aspect as it is.

    ``slice_mm``/``inplane_mm``: resample to this slice thickness (a slab average, as a scanner's
    thick slice is) and in-plane spacing; ``cut_level``: end the field of view inside this
    vertebra (``cut_side`` of it: ``superior`` keeps what lies below its middle), so it is cut as
    in a scan that stopped there; ``body_shell_mm``: add a layer of soft tissue of this thickness
    (``shell_hu``) around the skin, for a heavier patient.
    """

    slice_mm: float | None = None
    inplane_mm: float | None = None
    cut_level: str | None = None
    cut_side: str = "superior"
    body_shell_mm: float | None = None
    shell_hu: float = -50.0  # between fat (-100) and muscle (+40): a heavier patient's added tissue

    def __post_init__(self) -> None:
        for name in ("slice_mm", "inplane_mm", "body_shell_mm"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise PatientDataError(f"degradation {name} must be > 0 mm, got {v}")
        if self.cut_side not in ("superior", "inferior"):
            raise PatientDataError(f"degradation cut_side must be superior or inferior, got {self.cut_side!r}")
        if self.cut_level is not None and normalise_level(self.cut_level) is None:
            raise PatientDataError(f"degradation cut_level {self.cut_level!r} is not a vertebra name (e.g. T12, L1)")

    @property
    def is_identity(self) -> bool:
        return self.slice_mm is None and self.inplane_mm is None and self.cut_level is None and self.body_shell_mm is None

    def describe(self) -> str:
        parts = []
        if self.slice_mm or self.inplane_mm:
            parts.append(f"resampled to {self.inplane_mm or 'native'} mm in-plane, {self.slice_mm or 'native'} mm slices")
        if self.cut_level:
            parts.append(f"field of view ending inside {normalise_level(self.cut_level)} ({self.cut_side} half removed)")
        if self.body_shell_mm:
            parts.append(f"{self.body_shell_mm:g} mm of {self.shell_hu:g} HU tissue around the skin")
        return "; ".join(parts) or "as it is"


def _digest(paths: list[Path | None], deg: Degradation) -> str:
    return content_digest(paths, json.dumps(asdict(deg), sort_keys=True), f"degrade-v{DEGRADE_VERSION}")[:24]


def _resample(hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, spacing_mm: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample canonical (RAS-ordered) volumes to ``spacing_mm`` per axis, covering the same extent."""
    old = np.linalg.norm(affine[:3, :3], axis=0)
    # A thick slice integrates its slab: smooth along each axis that gets coarser before sampling.
    sigma = np.where(spacing_mm > old, np.sqrt(np.maximum(spacing_mm**2 - old**2, 0.0)) / 2.355 / old, 0.0)
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), sigma) if np.any(sigma > 0) else hu.astype(np.float32)
    step = spacing_mm / old  # new voxel step in old voxel units
    shape = np.maximum(1, np.floor((np.array(hu.shape) - 1) / step).astype(int) + 1)
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, step, strict=True)], indexing="ij")
    coords = np.stack(grid)
    new_hu = ndimage.map_coordinates(smooth, coords, order=1, mode="nearest").astype(np.float32)
    new_lab = ndimage.map_coordinates(labels, coords, order=0, mode="nearest").astype(labels.dtype)
    new_aff = affine.copy()
    new_aff[:3, :3] = affine[:3, :3] * step  # same origin (voxel 0 centre), longer steps
    return new_hu, new_lab, new_aff


def _cut(hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, level_ids: dict[str, int], level: str, side: str
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """End the field of view (axis 2, inferior to superior) inside one vertebra, its neighbour on the kept side whole.

    The cut lies at the vertebra's middle slice, or just past the neighbour's processes where they
    reach further (spinous processes overlap the next level).
    """
    def extent(lid: int) -> tuple[int, int] | None:
        ks = np.nonzero((labels == lid).any(axis=(0, 1)))[0]
        return (int(ks[0]), int(ks[-1])) if len(ks) else None

    own = extent(level_ids[level])
    if own is None:
        raise PatientDataError(f"degradation cut_level {level}: not in the label map")
    from twinsim.anatomy.labels import level_sort_key

    order = sorted(level_ids, key=level_sort_key)  # cranial to caudal
    i = order.index(level)
    kept_neighbour = order[i + 1] if side == "superior" and i + 1 < len(order) else (order[i - 1] if side == "inferior" and i > 0 else None)
    near = extent(level_ids[kept_neighbour]) if kept_neighbour else None
    mid = (own[0] + own[1]) // 2
    if side == "superior":  # keep slices [0, k]
        k = max(mid, near[1] + 2) if near else mid
        if k >= own[1]:
            raise PatientDataError(f"degradation cut_level {level}: cannot cut it without cutting {kept_neighbour}")
        return hu[:, :, : k + 1], labels[:, :, : k + 1], affine.copy()
    k = min(mid, near[0] - 2) if near else mid  # keep slices [k, end)
    if k <= own[0]:
        raise PatientDataError(f"degradation cut_level {level}: cannot cut it without cutting {kept_neighbour}")
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine[:3, 3]
    return hu[:, :, k:], labels[:, :, k:], aff


def _thicken(hu: np.ndarray, affine: np.ndarray, shell_mm: float, shell_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue ``shell_mm`` thick around the body, the volume padded in-plane so the shell fits."""
    from twinsim.anatomy.patient import MeshingParams, body_mask

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    pad = [int(np.ceil(shell_mm / spacing[0])) + 2, int(np.ceil(shell_mm / spacing[1])) + 2, 0]
    # A heavier patient is scanned with a larger field of view: what lay outside the reconstruction circle is air.
    padded = np.pad(np.where(hu <= OUTSIDE_FOV_HU, AIR_HU, hu), [(p, p) for p in pad], constant_values=AIR_HU)
    aff = affine.copy()
    aff[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array(pad, dtype=float)
    body = body_mask(padded, aff, MeshingParams().skin_threshold_hu)
    out = padded.copy()
    for k in range(padded.shape[2]):  # per axial slice: a heavier body is wider, not longer
        if body[:, :, k].any():
            dist = ndimage.distance_transform_edt(~body[:, :, k], sampling=spacing[:2])
            shell = (dist > 0) & (dist <= shell_mm) & (padded[:, :, k] < shell_hu)
            out[:, :, k][shell] = shell_hu
    return out, aff


def degraded_patient_files(ct_path: Path, labels_path: Path, label_table: Path | None, deg: Degradation,
                           cache_dir: Path | None = None) -> tuple[Path, Path]:
    """``(ct, labels)`` NIfTI files of the degraded patient (written once, atomically, then reused)."""
    if deg.is_identity:
        return ct_path, labels_path
    key = _digest([ct_path, labels_path, label_table], deg)
    entry = (cache_dir or cache_home() / "degraded") / key
    ct_out, lab_out = entry / "ct.nii.gz", entry / "labels.nii.gz"
    if ct_out.is_file() and lab_out.is_file():
        return ct_out, lab_out
    ct = load_ct(ct_path, labels_path, label_table)
    hu, labels, affine = ct.hu, ct.labels, ct.affine_mm.copy()
    if deg.cut_level is not None:
        level = normalise_level(deg.cut_level)
        if level not in ct.level_ids:
            raise PatientDataError(f"degradation cut_level {level}: not in the label map; present: {', '.join(ct.levels)}")
        hu, labels, affine = _cut(hu, labels, affine, ct.level_ids, level, deg.cut_side)
    if deg.slice_mm is not None or deg.inplane_mm is not None:
        old = np.linalg.norm(affine[:3, :3], axis=0)
        target = np.array([deg.inplane_mm or old[0], deg.inplane_mm or old[1], deg.slice_mm or old[2]])
        hu, labels, affine = _resample(hu, labels, affine, target)
    if deg.body_shell_mm is not None:
        hu, affine = _thicken(hu, affine, deg.body_shell_mm, deg.shell_hu)
        pad = ((hu.shape[0] - labels.shape[0]) // 2, (hu.shape[1] - labels.shape[1]) // 2, 0)
        labels = np.pad(labels, [(p, p) for p in pad])
    with atomic_folder(entry) as tmp:
        for data, name in ((np.round(hu).astype(np.int16), "ct.nii.gz"), (labels.astype(np.int16), "labels.nii.gz")):
            img = nib.Nifti1Image(data, affine)
            img.header.set_xyzt_units("mm")
            nib.save(img, tmp / name)
        (tmp / "degradation.json").write_text(json.dumps({"source_ct": str(ct_path), "source_labels": str(labels_path),
                                                          **asdict(deg), "version": DEGRADE_VERSION}, indent=1))
    return ct_out, lab_out
