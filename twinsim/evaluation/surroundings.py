"""What the X-rays show around the vertebra: an ablation of the bench's CT. **Evaluation code only.**

The reconstruction explains one vertebra; everything else the beam crosses is clutter to it. To
measure what that clutter costs, the bench can render its DRRs from a copy of the CT in which
every voxel outside the target vertebra's label is replaced:

- ``ct``: the CT as it is (the clinical case);
- ``tissue``: the patient's body (voxels above -500 HU) as uniform soft tissue (40 HU), the air
  around it left as air: the vertebra stays embedded in tissue, with no neighbours, organs or
  muscle boundaries;
- ``air``: everything but the vertebra is air, as on a dry bone in a phantom study.

The vertebra's own voxels are never changed, and the fitter still gets only the images.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the bench's CLI reads SURROUNDINGS without loading the CT reader
    from twinsim.anatomy.ct import CTVolume

SURROUNDINGS = ("ct", "tissue", "air")
SOFT_TISSUE_HU = 40.0
AIR_HU = -1000.0
BODY_THRESHOLD_HU = -500.0  # above this a voxel is inside the patient (fat is about -100 HU)


def check_surroundings(surroundings: str) -> None:
    """Refuse a name that is not one of :data:`SURROUNDINGS` (before any CT is loaded)."""
    if surroundings not in SURROUNDINGS:
        raise ValueError(f"unknown surroundings {surroundings!r}: use one of {', '.join(SURROUNDINGS)}")


def with_surroundings(ct: CTVolume, level: str, surroundings: str) -> CTVolume:
    """A copy of ``ct`` whose voxels outside ``level``'s label are replaced as ``surroundings`` says."""
    check_surroundings(surroundings)
    if surroundings == "ct":
        return ct
    keep = ct.vertebra_mask(level)
    if surroundings == "air":
        outside = np.float32(AIR_HU)
    else:
        outside = np.where(ct.hu > BODY_THRESHOLD_HU, np.float32(SOFT_TISSUE_HU), np.float32(AIR_HU))
    return replace(ct, hu=np.where(keep, ct.hu, outside).astype(np.float32))
