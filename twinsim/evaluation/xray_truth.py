"""Ground truth of a simulated acquisition: projected vertebra masks and projected points.

**Evaluation code only.** The planner and the twin never import this module: they see the
X-ray image and its geometry, as with a real C-arm.
"""

from __future__ import annotations

import numpy as np

from twinsim import frames
from twinsim.anatomy.ct import CTVolume
from twinsim.anatomy.meshing import mask_bounds
from twinsim.imaging.drr import make_subject, render_line_integrals
from twinsim.imaging.projection import ProjectionGeometry


def project_points(geom: ProjectionGeometry, points_mm: np.ndarray) -> np.ndarray:
    """Pixel coordinates (u, v) of 3D points given in the geometry's frame (mm)."""
    return geom.project(points_mm)


def vertebra_projection(ct: CTVolume, level: str, geom: ProjectionGeometry, weight: str = "length",
                        n_samples: int = 256) -> np.ndarray:
    """Per-pixel projection of one vertebra's label, (H, W); ``> 0`` is its 2D mask.

    ``weight="length"``: chord length (mm) of each ray through the vertebra.
    ``weight="volume"``: the chord weighted by (distance from source / SDD)^2, i.e. the bone
    volume each pixel's frustum holds, so the weighted image centroid is where the vertebra's
    3D centroid projects (up to second-order perspective terms).
    """
    mask = ct.vertebra_mask(level, require_complete=False)
    lo, hi = mask_bounds(mask, pad=1)
    crop = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    affine = ct.affine_mm.copy()
    affine[:3, 3] = frames.transform_points(ct.affine_mm, lo.astype(float))
    if weight == "volume":
        ijk = np.stack(np.meshgrid(*(np.arange(n) for n in crop.shape), indexing="ij"), axis=-1).reshape(-1, 3)
        d = np.linalg.norm(frames.transform_points(affine, ijk) - geom.source_mm, axis=1).reshape(crop.shape)
        crop = crop * (d / geom.sdd_mm) ** 2
    elif weight != "length":
        raise ValueError(f"weight must be 'length' or 'volume', got {weight!r}")
    return render_line_integrals(make_subject(crop, affine, convert_to_mu=False), geom, n_samples)[0]


def weighted_centroid_px(image: np.ndarray) -> np.ndarray:
    """(u, v) centroid of a non-negative image, with pixel centres at index + 0.5."""
    total = float(image.sum())
    if total <= 0:
        raise ValueError("image is empty: the structure does not project onto the detector")
    v, u = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] + 0.5
    return np.array([(image * u).sum() / total, (image * v).sum() / total])
