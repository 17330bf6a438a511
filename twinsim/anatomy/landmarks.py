"""Bony landmarks a clinician can touch with a pointer, found on a vertebra's CT mesh (RAS mm).

Used as paired-point fiducials for patient registration and as the clamp site of the patient
reference. They come from planning data (the CT), so the twin may compute them.
"""

from __future__ import annotations

import numpy as np

from twinsim.anatomy.meshing import SurfaceMesh

MIDLINE_HALF_WIDTH_MM = 8.0


def spinous_tip_mm(mesh: SurfaceMesh) -> np.ndarray:
    """The most posterior surface point near the midline (RAS: posterior is -y, lateral is x)."""
    v = mesh.vertices_mm
    c = v.mean(0)
    mid = np.abs(v[:, 0] - c[0]) < MIDLINE_HALF_WIDTH_MM
    return v[mid][np.argmin(v[mid, 1])]


def transverse_tips_mm(mesh: SurfaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) most lateral surface points (RAS: left is +x)."""
    v = mesh.vertices_mm
    return v[np.argmax(v[:, 0])], v[np.argmin(v[:, 0])]


def posterior_surface_mm(mesh: SurfaceMesh, fraction: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Vertex indices and normals of the posterior elements' outer surface (what an open approach exposes).

    Kept: vertices in the posterior ``fraction`` of the vertebra whose outward normal faces
    posteriorly (within 60 degrees).
    """
    v, f = mesh.vertices_mm, mesh.faces
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    y = v[:, 1]
    cut = y.min() + fraction * (y.max() - y.min())
    keep = np.flatnonzero((y < cut) & (n[:, 1] < -0.5))
    return keep, n[keep]
