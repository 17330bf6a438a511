"""Keeping the example patient out of every training set, by content rather than by file name.

Two surfaces of the same bone, meshed by different pipelines, agree to within a fraction of a
millimetre once rigidly aligned; vertebrae of different people (or different levels) differ by
well over a millimetre. ``same_bone_distance_mm`` measures that: the mean distance from points
on one surface to the other after the best rigid alignment. A training shape that close to any
of the example CT's vertebrae is the example patient under another name, and the build refuses
it, whatever its file or folder is called.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import open3d as o3d

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.shape.build import best_of_24_starts, icp, sample_surface

# Measured on the example CT: its own L1 re-meshed with other smoothing and resolution, 0.10 mm;
# its own T12 against its own L1, 0.96 mm; other people's L1 and T12, 1.2-1.9 mm.
SAME_BONE_MM = 0.5


class HeldOutViolation(ValueError):
    """A training shape is one of the example patient's vertebrae."""


def same_bone_distance_mm(a: SurfaceMesh, b: SurfaceMesh, seed: int = 0) -> float:
    """Mean point-to-surface distance (mm) from ``a`` to ``b`` after the best rigid fit of ``a`` onto ``b``."""
    a_o3d, b_o3d = a.to_open3d(), b.to_open3d()
    coarse_a = sample_surface(a_o3d, 800, seed)
    coarse_b = sample_surface(b_o3d, 800, seed + 1)
    best = best_of_24_starts(coarse_a, coarse_b)
    fine_a = sample_surface(a_o3d, 4000, seed)
    T, _ = icp(fine_a, sample_surface(b_o3d, 4000, seed + 1), best, radii=(4.0, 2.0, 1.0))
    pts = frames.transform_points(T, fine_a).astype(np.float32)
    return float(np.abs(b.raycasting_scene().compute_distance(o3d.core.Tensor(pts)).numpy()).mean())


def check_held_out(shapes: Iterable[tuple[str, SurfaceMesh]], example: dict[str, SurfaceMesh],
                   threshold_mm: float = SAME_BONE_MM) -> dict[str, float]:
    """Each training shape's distance to the nearest of the given example vertebrae (give neighbouring
    levels too, so that a mislabelled level is caught). Raises ``HeldOutViolation`` naming any shape within the threshold."""
    out: dict[str, float] = {}
    if not example:
        raise ValueError("no example vertebrae to check against")
    for name, mesh in shapes:
        d = {lvl: same_bone_distance_mm(mesh, ex) for lvl, ex in example.items()}
        nearest = min(d, key=d.get)
        out[name] = round(d[nearest], 3)
        if d[nearest] < threshold_mm:
            raise HeldOutViolation(
                f"training shape {name} is the example patient's {nearest} ({d[nearest]:.2f} mm apart after rigid "
                f"alignment, same-bone threshold {threshold_mm} mm): the example CT is test data and may not be trained on")
    return out
