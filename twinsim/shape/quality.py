"""Shape-model quality: compactness, leave-one-person-out generalization, specificity, representation floor.

Generalization and specificity work on the corresponded training shapes stored in the model
(correspondence is not redone per fold, as is usual for these measures); the representation
floor fits the model to surfaces no model was trained on (the example CT's vertebrae).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import open3d as o3d

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh, raycasting_scene
from twinsim.shape.model import ShapeModel
from twinsim.shape.surface_fit import fit_to_surface


def _surface_dist(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    scene = raycasting_scene(vertices, faces)
    return np.abs(scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy())


def compactness(model: ShapeModel) -> list[float]:
    return np.cumsum(model.variance_ratio).tolist()


def generalization(model: ShapeModel) -> dict[str, object]:
    """Leave-one-person-out: rebuild the PCA without every shape of one person, reconstruct each of
    that person's shapes with k modes. A person's other levels never help predict their own shape.

    With a single person in the model there is no one to leave out: the fold is then one shape (a
    level), and the figure measures between-level generalization only (``scheme`` says which).
    """
    S = model.training_vertices_mm
    n = len(S)
    persons = list(model.provenance.get("training_persons") or model.training_names)
    groups = {p: [i for i in range(n) if persons[i] == p] for p in dict.fromkeys(persons)}
    scheme = "leave-one-person-out"
    if len(groups) < 2:
        groups = {model.training_names[i]: [i] for i in range(n)}
        scheme = "leave-one-shape-out (one person: between levels only)"
    kmax = min(model.n_modes, min(n - len(g) - 1 for g in groups.values()))
    if kmax < 0:
        raise ValueError(f"model {model.name}: too few shapes to leave one group out")
    errs_mean, errs_rms = [], []
    for held in groups.values():
        rest = np.delete(S, held, axis=0)
        mean = rest.mean(0)
        X = (rest - mean).reshape(len(rest), -1)
        _, _, Vt = np.linalg.svd(X, full_matrices=False)
        for i in held:
            target = frames.transform_points(frames.rigid_fit(S[i], mean), S[i])
            d = (target - mean).reshape(-1)
            row_mean, row_rms = [], []
            for k in range(kmax + 1):
                rec = mean.reshape(-1) + Vt[:k].T @ (Vt[:k] @ d)
                dist = _surface_dist(rec.reshape(-1, 3), target, model.faces)
                row_mean.append(dist.mean())
                row_rms.append(np.sqrt((dist**2).mean()))
            errs_mean.append(row_mean)
            errs_rms.append(row_rms)
    return {"scheme": scheme, "folds": len(groups), "modes": list(range(kmax + 1)),
            "mean_mm": np.mean(errs_mean, axis=0).tolist(), "rms_mm": np.mean(errs_rms, axis=0).tolist()}


def specificity(model: ShapeModel, samples: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """Random instances (coefficients ~ N(0, 1)) against their nearest training shape, mean vertex distance."""
    rng = np.random.default_rng(seed)
    S = model.training_vertices_mm
    ks = list(range(1, model.n_modes + 1))
    mean_d, sd_d = [], []
    for k in ks:
        d = []
        for _ in range(samples):
            v = model.instance(rng.standard_normal(k))
            d.append(min(np.linalg.norm(s - v, axis=1).mean() for s in S))
        mean_d.append(float(np.mean(d)))
        sd_d.append(float(np.std(d)))
    return {"modes": ks, "mean_mm": mean_d, "sd_mm": sd_d}


def representation_floor(model: ShapeModel, target: SurfaceMesh) -> dict[str, Any]:
    fit = fit_to_surface(model, target)
    return {"mean_mm": fit.mean_distance_mm, "p95_mm": fit.p95_distance_mm, "coeffs_sd": fit.coeffs_sd.tolist()}


def correspondence_errors(model: ShapeModel, raw_meshes: dict[str, SurfaceMesh]) -> dict[str, float]:
    """Mean surface distance (mm) from each registered training shape to its raw surface."""
    out = {}
    for i, name in enumerate(model.training_names):
        raw = raw_meshes[name]
        v = frames.transform_points(model.T_model_raw[i], raw.vertices_mm)
        out[name] = float(_surface_dist(model.training_vertices_mm[i], v, raw.faces).mean())
    return out
