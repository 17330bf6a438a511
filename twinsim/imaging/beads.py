"""Radio-opaque beads in X-rays: rendering them (the simulated phantom), finding them, matching them.

Steel beads of a calibration phantom show as small dark-on-film (bright here: attenuating)
discs over the anatomy. Detection removes the anatomy with a morphological top-hat, keeps
blobs of about the bead's projected size and returns intensity-weighted centres; matching
pairs them with where the nominal calibration predicts each bead (Hungarian, gated).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from twinsim import frames
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.projection import ProjectionGeometry

STEEL_MU_PER_MM = 0.35  # as the planning picture's cannulas: a 2 mm chord transmits about half


def sphere_chord_mm(geom: ProjectionGeometry, centres_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """(H, W) summed length of each pixel's ray (source to pixel centre) inside the spheres."""
    out = np.zeros((geom.height_px, geom.width_px))
    K_inv = np.linalg.inv(geom.K)
    T = geom.T_frame_source_mm
    o = T[:3, 3]
    for c in np.asarray(centres_mm, dtype=np.float64).reshape(-1, 3):
        cam = frames.transform_points(geom.T_source_frame_mm, c[None])[0]
        if cam[2] <= radius_mm:
            continue
        uv = geom.project(c[None])[0]
        r_px = radius_mm / cam[2] * geom.K[0, 0] + 2.0
        u0, u1 = int(max(0, np.floor(uv[0] - r_px))), int(min(geom.width_px, np.ceil(uv[0] + r_px)))
        v0, v1 = int(max(0, np.floor(uv[1] - r_px))), int(min(geom.height_px, np.ceil(uv[1] + r_px)))
        if u0 >= u1 or v0 >= v1:
            continue
        v, u = np.mgrid[v0:v1, u0:u1] + 0.5
        d = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ K_inv.T @ T[:3, :3].T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        w = c - o
        along = d @ w
        miss2 = np.einsum("ij,ij->i", w[None] - along[:, None] * d, w[None] - along[:, None] * d)
        out[v0:v1, u0:u1] += (2.0 * np.sqrt(np.clip(radius_mm**2 - miss2, 0.0, None))).reshape(v1 - v0, u1 - u0)
    return out


def add_beads(acq: Acquisition, centres_mm: np.ndarray, radius_mm: float, mu_per_mm: float = STEEL_MU_PER_MM) -> Acquisition:
    """The acquisition with steel beads (centres in its geometry's frame) in the beam."""
    img = np.clip(acq.image.astype(np.float64), 0.0, 1.0)
    chord = sphere_chord_mm(acq.geometry, centres_mm, radius_mm)
    return replace(acq, image=(1.0 - (1.0 - img) * np.exp(-mu_per_mm * chord)).astype(np.float32))


def detect_beads(image: np.ndarray, bead_diameter_px: float, threshold_mad: float = 8.0) -> np.ndarray:
    """(M, 2) centres (u, v) of bead-sized bright blobs, intensity weighted."""
    img = np.asarray(image, dtype=np.float64)
    size = int(np.ceil(2.5 * bead_diameter_px)) | 1
    tophat = img - ndimage.grey_opening(img, size=(size, size))  # keeps what is smaller than the structuring element
    mad = np.median(np.abs(tophat - np.median(tophat))) + 1e-12
    mask = tophat > np.median(tophat) + threshold_mad * 1.4826 * mad
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.empty((0, 2))
    idx = np.arange(1, n + 1)
    area = ndimage.sum(np.ones_like(img), labels, idx)
    expected = np.pi * (bead_diameter_px / 2) ** 2
    keep = idx[(area >= 0.2 * expected) & (area <= 4.0 * expected)]
    centres = ndimage.center_of_mass(tophat, labels, keep)
    return np.array([[c[1] + 0.5, c[0] + 0.5] for c in centres]).reshape(-1, 2)  # (row, col) -> pixel centre (u, v)


def match_beads(detected_px: np.ndarray, predicted_px: np.ndarray, gate_px: float) -> np.ndarray:
    """(N, 2) the detection matched to each predicted bead, NaN where none lies within ``gate_px``."""
    out = np.full((len(predicted_px), 2), np.nan)
    if len(detected_px) == 0:
        return out
    cost = np.linalg.norm(predicted_px[:, None, :] - detected_px[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(np.where(cost <= gate_px, cost, 1e6))
    for r, c in zip(rows, cols, strict=True):
        if cost[r, c] <= gate_px:
            out[r] = detected_px[c]
    return out
