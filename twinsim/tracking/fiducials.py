"""What a patient is registered to: named anatomical fiducials and the bone surface in the planning CT (mm)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twinsim.anatomy.landmarks import spinous_tip_mm, transverse_tips_mm
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.tracking.calibration import CalibrationError


@dataclass
class RegistrationTarget:
    """What the patient is registered to: named fiducials and the bone surface, in the planning CT (mm)."""

    fiducial_names: list[str]
    fiducials_ct_mm: np.ndarray
    surface: SurfaceMesh
    target_ct_mm: np.ndarray

    @property
    def landmarks_ct_mm(self) -> dict[str, np.ndarray]:
        return dict(zip(self.fiducial_names, self.fiducials_ct_mm, strict=True))


def registration_target(vertebrae: dict[str, SurfaceMesh], target_level: str) -> RegistrationTarget:
    """``vertebrae`` in cranio-caudal order. Transverse tips of the target level and the one above, and the target's spinous tip."""
    levels = list(vertebrae)
    if target_level not in vertebrae:
        raise CalibrationError(f"no vertebra {target_level!r} to register to; levels: {levels}")
    i = levels.index(target_level)
    above = levels[i - 1] if i > 0 else target_level
    names, pts = [], []
    for lvl in dict.fromkeys((above, target_level)):
        left, right = transverse_tips_mm(vertebrae[lvl])
        names += [f"{lvl} left transverse tip", f"{lvl} right transverse tip"]
        pts += [left, right]
    names.append(f"{target_level} spinous tip")
    pts.append(spinous_tip_mm(vertebrae[target_level]))
    return RegistrationTarget(names, np.array(pts), vertebrae[target_level], vertebrae[target_level].centroid_mm)


def patient_registration_target(patient: Any, target_level: str) -> RegistrationTarget:
    """The same from a patient model (its ``levels`` in cranio-caudal order and ``vertebra(level)``)."""
    return registration_target({lvl: patient.vertebra(lvl) for lvl in patient.levels}, target_level)
