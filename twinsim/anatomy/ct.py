"""Load a patient CT and its vertebra label map, and check them before anything is built.

The ``ct`` frame is the scanner (NIfTI world) frame in RAS+ millimetres. Volumes are
reoriented to the closest canonical (RAS) voxel order on load, so LPS, LAS or any other
stored orientation gives the same anatomy in the same ``ct`` coordinates.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from twinsim.anatomy.labels import (
    TOTALSEGMENTATOR_TOTAL,
    LabelTableError,
    level_sort_key,
    load_label_table,
)
from twinsim.errors import TwinsimError

# Below the HU of air: scanners fill voxels outside the reconstruction circle with it.
OUTSIDE_FOV_HU = -1500.0
# Plausible voxel spacing range, mm; a file whose spacing is below this was very likely
# written in metres.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0


class PatientDataError(TwinsimError, ValueError):
    """The patient's CT or label map cannot be used; the message says why and what to do."""


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    if not path.exists():
        raise PatientDataError(f"{what} file not found: {path}")
    if not path.is_file():
        raise PatientDataError(f"{what} path is not a file: {path}")
    try:
        img = nib.load(str(path))
        # Touch the data now so a truncated or corrupt file fails here, with its name.
        img.dataobj[(0,) * len(img.shape)]
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise PatientDataError(f"{what} file {path} is not a readable NIfTI image: {exc}") from exc
    if len(img.shape) != 3:
        raise PatientDataError(f"{what} file {path} must be a 3D volume, got shape {img.shape}")
    return img


def _check_units(img: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    """Return the voxel-to-world affine in mm, converting from metres when the header says so."""
    affine = np.array(img.affine, dtype=np.float64)
    space_unit, _ = img.header.get_xyzt_units()
    if space_unit == "meter":
        affine[:3, :] *= 1000.0
    elif space_unit == "micron":
        affine[:3, :] *= 1e-3
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise PatientDataError(
            f"{what} file {path} has voxel spacing {np.round(spacing, 6).tolist()} "
            f"(header unit: {space_unit}); expected millimetres in "
            f"[{MIN_SPACING_MM}, {MAX_SPACING_MM}]. Was it written in metres?"
        )
    return affine


@dataclass(frozen=True)
class CTVolume:
    """A CT in Hounsfield units with its label map, both in canonical RAS voxel order."""

    hu: np.ndarray  # float32 (I, J, K)
    labels: np.ndarray  # int32 (I, J, K)
    affine_mm: np.ndarray  # voxel index -> ct frame (RAS, mm)
    level_ids: dict[str, int]  # vertebra level -> label id, for levels present in the map
    ct_path: Path
    labels_path: Path
    edges_of: dict[str, list[str]] = field(default_factory=dict)  # level -> FOV edges it touches

    @property
    def spacing_mm(self) -> np.ndarray:
        return np.linalg.norm(self.affine_mm[:3, :3], axis=0)

    @property
    def levels(self) -> list[str]:
        return sorted(self.level_ids, key=level_sort_key)

    @property
    def complete_levels(self) -> list[str]:
        return [lvl for lvl in self.levels if not self.edges_of.get(lvl)]

    def vertebra_mask(self, level: str, require_complete: bool = True) -> np.ndarray:
        """Boolean mask of one vertebra, with a clear error if it is absent or cut."""
        if level not in self.level_ids:
            raise PatientDataError(
                f"vertebra {level} is not in the label map {self.labels_path.name}; "
                f"present: {', '.join(self.levels) or 'none'}"
            )
        if require_complete and self.edges_of.get(level):
            raise PatientDataError(
                f"vertebra {level} is cut by the CT field of view "
                f"(touches the {', '.join(self.edges_of[level])} edge); "
                f"complete vertebrae: {', '.join(self.complete_levels) or 'none'}"
            )
        return self.labels == self.level_ids[level]


def _fov_edges(labels: np.ndarray, label_id: int, bbox: tuple[slice, ...], outside_fov: np.ndarray) -> list[str]:
    """Which edges of the field of view a label touches (canonical RAS voxel order)."""
    names = (("right", "left"), ("posterior", "anterior"), ("inferior", "superior"))
    edges = []
    for axis, sl in enumerate(bbox):
        if sl.start == 0:
            edges.append(names[axis][0])
        if sl.stop == labels.shape[axis]:
            edges.append(names[axis][1])
    # Voxels outside the reconstruction circle (in-plane FOV) bordering the label: cut too.
    grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in bbox)
    mask = labels[grown] == label_id
    if (ndimage.binary_dilation(mask) & outside_fov[grown]).any():
        edges.append("reconstruction-circle")
    return edges


def _check_hounsfield(hu: np.ndarray, vertebra_hu: np.ndarray, path: Path) -> None:
    """Reject intensities that are not HU: offset-stored, normalised, or with implausible bone."""
    inside = hu[hu > OUTSIDE_FOV_HU]
    if inside.size == 0:
        raise PatientDataError(f"CT {path} holds no value above {OUTSIDE_FOV_HU:.0f} HU: it is empty")
    lo, hi = float(inside.min()), float(inside.max())
    hint = "store the CT in Hounsfield units (apply the DICOM rescale slope/intercept)"
    if lo >= 0.0:
        raise PatientDataError(
            f"CT {path} does not look like Hounsfield units: no value below 0 (range {lo:.0f}..{hi:.0f}); "
            f"air and fat are negative in HU. If it was stored with an offset, {hint}."
        )
    if hi < 100.0:
        raise PatientDataError(
            f"CT {path} does not look like Hounsfield units: maximum {hi:.3g}, no bone (> 100 HU). "
            f"Is it normalised? {hint}."
        )
    if vertebra_hu.size:
        med = float(np.median(vertebra_hu))
        # Cancellous bone is ~100-400 HU; osteoporotic bone can approach soft tissue, never air.
        if not -100.0 < med < 2000.0:
            raise PatientDataError(
                f"CT {path}: median intensity inside the vertebra labels is {med:.0f}, "
                f"not bone in Hounsfield units; {hint}."
            )


def load_ct(
    ct_path: str | Path,
    labels_path: str | Path,
    label_table: str | Path | None = None,
) -> CTVolume:
    """Load and validate a CT (HU) and its TotalSegmentator-style label map.

    ``label_table`` maps structure names to label ids (CSV ``structure,id`` or JSON); without
    it, TotalSegmentator's ``total`` numbering is assumed.
    """
    ct_path, labels_path = Path(ct_path), Path(labels_path)
    ct_img = _load_nifti(ct_path, "CT")
    lab_img = _load_nifti(labels_path, "label map")
    if ct_img.shape != lab_img.shape:
        raise PatientDataError(
            f"CT {ct_path.name} has shape {ct_img.shape} but label map {labels_path.name} has "
            f"shape {lab_img.shape}; they must be on the same voxel grid"
        )
    ct_aff = _check_units(ct_img, ct_path, "CT")
    lab_aff = _check_units(lab_img, labels_path, "label map")
    if not np.allclose(ct_aff, lab_aff, atol=1e-3):
        raise PatientDataError(
            f"CT {ct_path.name} and label map {labels_path.name} have different affines "
            f"(max difference {np.abs(ct_aff - lab_aff).max():.4g} mm); they must be on the same voxel grid"
        )
    try:
        level_table = load_label_table(label_table) if label_table else dict(TOTALSEGMENTATOR_TOTAL)
    except LabelTableError as exc:
        raise PatientDataError(str(exc)) from exc

    # Reorient to canonical RAS voxel order; the affine (already in mm) follows.
    ornt = nib.orientations.io_orientation(ct_aff)
    to_ras = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    shape = ct_img.shape
    affine = ct_aff @ nib.orientations.inv_ornt_aff(to_ras, shape)
    hu = nib.orientations.apply_orientation(ct_img.get_fdata(dtype=np.float32), to_ras)
    raw_labels = np.asanyarray(lab_img.dataobj)
    if not np.issubdtype(raw_labels.dtype, np.integer):
        rounded = np.rint(raw_labels)
        if not np.allclose(raw_labels, rounded, atol=1e-3):
            raise PatientDataError(f"label map {labels_path.name} holds non-integer values; is it a label map?")
        raw_labels = rounded
    labels = nib.orientations.apply_orientation(raw_labels.astype(np.int32), to_ras)
    hu = np.ascontiguousarray(hu)
    labels = np.ascontiguousarray(labels)

    present = set(np.unique(labels).tolist())
    level_ids = {lvl: i for lvl, i in level_table.items() if i in present}
    _check_hounsfield(hu, hu[np.isin(labels, list(level_ids.values()))], ct_path)
    outside_fov = hu <= OUTSIDE_FOV_HU
    bboxes = ndimage.find_objects(labels, max_label=max(level_ids.values(), default=0))
    edges_of = {lvl: _fov_edges(labels, i, bboxes[i - 1], outside_fov) for lvl, i in level_ids.items()}

    return CTVolume(
        hu=hu,
        labels=labels,
        affine_mm=affine,
        level_ids=level_ids,
        ct_path=ct_path,
        labels_path=labels_path,
        edges_of=edges_of,
    )
