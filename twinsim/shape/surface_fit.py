"""Fit a shape model to a target surface (pose + shape), by symmetric closest-point distance.

Used to measure a model's representation floor on a held-out vertebra (the example CT's L1)
and, later, by the evaluation code of the X-ray reconstruction to get ground-truth landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.shape.build import chamfer_mm, cube_rotations, icp, sample_surface
from twinsim.shape.differentiable import DifferentiableInstance, axis_angle_to_matrix
from twinsim.shape.model import ShapeModel


@dataclass
class SurfaceFit:
    coeffs_sd: np.ndarray
    T_target_model: np.ndarray  # model frame -> target frame (mm)
    vertices_mm: np.ndarray  # fitted instance in the target frame
    mean_distance_mm: float  # symmetric surface distance
    p95_distance_mm: float


def surface_distances_mm(a: SurfaceMesh, b: SurfaceMesh, n: int = 20000, seed: int = 0) -> np.ndarray:
    """Distances from points sampled on ``a`` to surface ``b`` and from ``b`` to ``a`` (both sets)."""
    import open3d as o3d

    out = []
    for src, dst in ((a, b), (b, a)):
        scene = dst.raycasting_scene()
        pts = sample_surface(src.to_open3d(), n, seed).astype(np.float32)
        out.append(np.abs(scene.compute_distance(o3d.core.Tensor(pts)).numpy()))
    return np.concatenate(out)


def fit_to_surface(model: ShapeModel, target: SurfaceMesh, n_modes: int | None = None, iterations: int = 300,
                   prior_weight: float = 1e-3, seed: int = 0) -> SurfaceFit:
    """Rigid multi-start ICP of the mean, then joint pose + shape by Adam on a symmetric chamfer."""
    tgt_pts = sample_surface(target.to_open3d(), 3000, seed)
    mean_pts = sample_surface(model.mesh().to_open3d(), 3000, seed)
    best, best_err = None, np.inf
    for R in cube_rotations():
        T0 = frames.make_transform(R, tgt_pts.mean(0) - R @ mean_pts.mean(0))
        T, _ = icp(mean_pts, tgt_pts, T0, radii=(15.0, 8.0, 4.0, 2.0))
        err = chamfer_mm(frames.transform_points(T, mean_pts), tgt_pts)
        if err < best_err:
            best, best_err = T, err
    T0 = best
    inst = DifferentiableInstance(model, n_modes, dtype=torch.float64)
    k = inst.n_modes
    rng = np.random.default_rng(seed)
    sub = rng.choice(len(model.mean_mm), size=min(2500, len(model.mean_mm)), replace=False)
    # Pose relative to T0 about the target centroid keeps rotation and translation well scaled.
    centre = torch.tensor(tgt_pts.mean(0))
    tgt = torch.tensor(tgt_pts)
    tgt_tree = cKDTree(tgt_pts)
    R0 = torch.tensor(T0[:3, :3])
    t0 = torch.tensor(T0[:3, 3])
    b = torch.zeros(1, k, dtype=torch.float64, requires_grad=True)
    rv = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    tr = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([{"params": [b], "lr": 0.05}, {"params": [rv], "lr": 0.01}, {"params": [tr], "lr": 0.2}])
    zero = torch.zeros(1, 3, dtype=torch.float64)
    for _ in range(iterations):
        opt.zero_grad()
        v = inst(b, zero, zero)[0][sub] @ R0.T + t0
        v = (v - centre) @ axis_angle_to_matrix(rv)[0].T + centre + tr[0]
        # Nearest neighbours found without autograd (KD-trees): the chamfer's gradient flows through the matched
        # pairs only, as it would through a min over the full distance matrix, at a fraction of the cost.
        vn = v.detach().numpy()
        to_tgt = tgt_tree.query(vn)[1]
        to_v = cKDTree(vn).query(tgt_pts)[1]
        loss = (v - tgt[to_tgt]).norm(dim=1).mean() + (tgt - v[to_v]).norm(dim=1).mean() + prior_weight * (b**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        Rr = axis_angle_to_matrix(rv)[0].numpy()
    T_fit = frames.make_transform(Rr, centre.numpy() - Rr @ centre.numpy() + tr.detach().numpy()[0]) @ T0
    coeffs = b.detach().numpy()[0]
    verts = frames.transform_points(T_fit, model.instance(coeffs))
    dist = surface_distances_mm(SurfaceMesh(verts, model.faces), target, seed=seed)
    return SurfaceFit(coeffs, T_fit, verts, float(dist.mean()), float(np.percentile(dist, 95)))
