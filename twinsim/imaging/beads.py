"""Radio-opaque beads in X-rays: rendering them (the simulated phantom), finding them, matching them.

Steel beads of a calibration phantom show as small dark-on-film (bright here: attenuating)
discs over the anatomy. Detection is a matched filter at the bead's projected size scored
against the local noise; matching pairs the detections with where the nominal calibration
predicts each bead (Hungarian, gated).
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


def detect_beads(image: np.ndarray, bead_diameter_px: float, snr_min: float = 5.0) -> np.ndarray:
    """(M, 2) centres (u, v) of bead-sized bright blobs.

    A matched filter (a Laplacian of Gaussian at the bead's scale) answers to discs of about the
    bead's size and not to the anatomy's slow shading; each response is scored against the
    *local* noise, so beads over a dense, photon-starved region (a heavy patient's spine) count
    as beads over thin tissue do. Centres are the response's weighted mean about each peak.
    """
    img = np.asarray(image, dtype=np.float64)
    d = max(float(bead_diameter_px), 1.0)
    s = max(d / (2.0 * np.sqrt(2.0)), 0.7)
    resp = -ndimage.gaussian_laplace(img, s) * s**2
    win = int(np.ceil(8 * d)) | 1
    mean = ndimage.uniform_filter(resp, win)
    sd = np.sqrt(np.clip(ndimage.uniform_filter(resp**2, win) - mean**2, 0.0, None)) + 1e-12
    snr = (resp - mean) / sd
    peaks = (resp == ndimage.maximum_filter(resp, size=int(np.ceil(d)) | 1)) & (snr > snr_min)
    r = int(np.ceil(d / 2)) + 1
    out = []
    for i, j in np.argwhere(peaks):
        i0, i1, j0, j1 = max(0, i - r), min(img.shape[0], i + r + 1), max(0, j - r), min(img.shape[1], j + r + 1)
        w = np.clip(resp[i0:i1, j0:j1] - mean[i, j], 0.0, None)
        if w.sum() <= 0:
            continue
        ii, jj = np.mgrid[i0:i1, j0:j1]
        out.append([(w * jj).sum() / w.sum() + 0.5, (w * ii).sum() / w.sum() + 0.5])  # (row, col) -> pixel centre (u, v)
    return np.array(out, dtype=np.float64).reshape(-1, 2)


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
