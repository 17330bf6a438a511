"""The C-arm as a PyBullet body: source housing, detector housing and the C between them.

The body frame is the ``carm`` frame of :mod:`twinsim.imaging.carm_geometry` (origin at the
isocenter, z from source to detector), so moving the body and moving the imaging geometry
are one operation and cannot disagree.
"""

from __future__ import annotations

import numpy as np

from twinsim import frames
from twinsim.robot.bodies import compound_box_body
from twinsim.sim.scene_config import CArmConfig

ARC_RGBA = (0.85, 0.85, 0.88, 1.0)
SOURCE_RGBA = (0.35, 0.35, 0.40, 1.0)
DETECTOR_RGBA = (0.20, 0.25, 0.35, 1.0)


def _box_between(p0: np.ndarray, p1: np.ndarray, width_m: float, thickness_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Box spanning p0->p1 in the carm x-z plane; y is the arc's width (the rotation axis side)."""
    d = p1 - p0
    length = float(np.linalg.norm(d))
    z = d / length
    y = np.array([0.0, 1.0, 0.0])
    x = np.cross(y, z)
    T = frames.make_transform(np.column_stack([x, y, z]), (p0 + p1) / 2)
    return np.array([thickness_m, width_m, length]), T


def carm_boxes(cfg: CArmConfig) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """The boxes ``(size_m, T_carm_box, rgba)`` that make up the C-arm."""
    g = cfg.geometry
    sid, det = g.sid_mm * 1e-3, (g.sdd_mm - g.sid_mm) * 1e-3
    side = 1.0 if cfg.arc_side == "left" else -1.0  # carm x points to the patient's left at LAO 0
    boxes = []
    src = cfg.source_housing_m
    boxes.append((src, frames.make_transform(t=[0, 0, -sid - src[2] / 2 + cfg.focal_spot_depth_m]), SOURCE_RGBA))
    dh = cfg.detector_housing_m
    boxes.append((dh, frames.make_transform(t=[0, 0, det + dh[2] / 2]), DETECTOR_RGBA))
    r = cfg.arc_radius_m
    angles = np.linspace(-np.pi / 2, np.pi / 2, cfg.arc_segments + 1)
    pts = [np.array([side * r * np.cos(a), 0.0, r * np.sin(a)]) for a in angles]
    for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
        size, T = _box_between(p0, p1, cfg.arc_width_m, cfg.arc_thickness_m)
        size[2] += cfg.arc_thickness_m * 0.5  # overlap neighbours so the C has no gaps
        boxes.append((size, T, ARC_RGBA))
    # Posts joining the ends of the C to the two housings.
    src_back = np.array([0.0, 0.0, -sid - src[2] + cfg.focal_spot_depth_m])
    det_back = np.array([0.0, 0.0, det + dh[2]])
    for end, housing in ((pts[0], src_back), (pts[-1], det_back)):
        if np.linalg.norm(end - housing) > 1e-3:
            size, T = _box_between(housing, end, cfg.arc_width_m, cfg.arc_thickness_m)
            boxes.append((size, T, ARC_RGBA))
    return boxes


def create_carm_body(client: int, cfg: CArmConfig, T_world_carm: np.ndarray) -> tuple[int, dict[str, int]]:
    """The C-arm body and the link indices of its ``source`` (focal spot) and ``detector`` frames."""
    frame_links = {"source": cfg.geometry.T_carm_source, "detector": cfg.geometry.T_carm_detector}
    return compound_box_body(client, carm_boxes(cfg), T_world_carm, frame_links)
