"""Reconstruction accuracy against the ground-truth label map (evaluation code).

- DICE: the reconstructed surface voxelized on the CT grid (voxel centres inside the closed
  surface) against the vertebra's label.
- Surface distances between points sampled uniformly on the reconstruction and on the label's
  surface (its marching-cubes mesh), both directions: normalized surface distance (the share
  of points within a tolerance of the other surface) at 1 and 2 mm, the 95th-percentile
  Hausdorff distance (larger of the two directed 95th percentiles), and the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import open3d as o3d

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh, mask_bounds
from twinsim.shape.build import sample_surface

NSD_TOLERANCES_MM = (1.0, 2.0)
SURFACE_SAMPLES = 20000


def voxelize(mesh: SurfaceMesh, affine_mm: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Occupancy of voxel centres ``[lo, hi)`` of a grid (index -> mm ``affine_mm``) by a closed mesh."""
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    pts = frames.transform_points(affine_mm, ijk.astype(np.float64)).astype(np.float32)
    occ = mesh.raycasting_scene().compute_occupancy(o3d.core.Tensor(pts), nsamples=3).numpy() > 0.5
    return occ.reshape(tuple(b - a for a, b in zip(lo, hi, strict=True)))


def dice_on_grid(mesh: SurfaceMesh, mask: np.ndarray, affine_mm: np.ndarray, pad_vox: int = 4) -> float:
    """DICE of the mesh voxelized on the mask's grid against the mask, over a box holding both."""
    ijk = frames.transform_points(np.linalg.inv(affine_mm), mesh.vertices_mm)
    mlo, mhi = mask_bounds(mask, pad=pad_vox)
    lo = np.maximum(0, np.minimum(mlo, np.floor(ijk.min(0)).astype(int) - pad_vox))
    hi = np.minimum(mask.shape, np.maximum(mhi, np.ceil(ijk.max(0)).astype(int) + pad_vox + 1))
    rec = voxelize(mesh, affine_mm, lo, hi)
    gt = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    total = rec.sum() + gt.sum()
    return float(2.0 * np.logical_and(rec, gt).sum() / total) if total else 0.0


def directed_distances_mm(src: SurfaceMesh, dst: SurfaceMesh, n: int = SURFACE_SAMPLES, seed: int = 0) -> np.ndarray:
    pts = sample_surface(src.to_open3d(), n, seed).astype(np.float32)
    return np.abs(dst.raycasting_scene().compute_distance(o3d.core.Tensor(pts)).numpy())


def surface_metrics(reconstruction: SurfaceMesh, truth: SurfaceMesh, seed: int = 0) -> dict[str, float]:
    a = directed_distances_mm(reconstruction, truth, seed=seed)
    b = directed_distances_mm(truth, reconstruction, seed=seed + 1)
    both = np.concatenate([a, b])
    out = {f"nsd_{tol:g}mm": float((both <= tol).mean()) for tol in NSD_TOLERANCES_MM}
    out["hd95_mm"] = float(max(np.percentile(a, 95), np.percentile(b, 95)))
    out["msd_mm"] = float(both.mean())
    return out


def evaluate(reconstruction: SurfaceMesh, truth: SurfaceMesh, mask: np.ndarray, affine_mm: np.ndarray) -> dict[str, float]:
    """All metrics: ``dice``, ``nsd_1mm``, ``nsd_2mm``, ``hd95_mm``, ``msd_mm``; meshes in the mask's mm frame."""
    return {"dice": dice_on_grid(reconstruction, mask, affine_mm), **surface_metrics(reconstruction, truth)}


TRE_LANDMARKS = ("body_centroid", "left_pedicle_centre", "right_pedicle_centre")


def score_in_ct(model_annotations: Callable[[np.ndarray], dict[str, np.ndarray]], vertices_frame_mm: np.ndarray,
                faces: np.ndarray, T_ct_frame_mm: np.ndarray, truth: SurfaceMesh, mask: np.ndarray, affine_mm: np.ndarray,
                landmarks_ct_mm: dict[str, np.ndarray]) -> dict[str, Any]:
    """A reconstruction in any frame, scored in ``ct``: the metrics of :func:`evaluate`, and the target registration
    error of its body centre and pedicle centres against the same landmarks on the true vertebra."""
    verts_ct = frames.transform_points(T_ct_frame_mm, vertices_frame_mm)
    est = model_annotations(verts_ct)
    tre = {n: float(np.linalg.norm(est[n] - landmarks_ct_mm[n])) for n in TRE_LANDMARKS}
    return {**evaluate(SurfaceMesh(verts_ct, faces, frame="ct"), truth, mask, affine_mm), "tre_mm": tre,
            "tre_mean_mm": float(np.mean(list(tre.values())))}
