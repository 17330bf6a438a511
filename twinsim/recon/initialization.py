"""Starting pose of the shape model from 2D landmarks in two views (seed 000, section 4.3).

The clinician (or, later, a detector) marks the same anatomical landmarks in both X-rays.
Each landmark seen in both is triangulated from the two projection matrices (linear DLT);
a rigid Procrustes fit of the model's mean landmarks to the triangulated points gives the
starting pose. With fewer than three usable landmarks, the fallback of seed 000 uses the
"backup landmarks" (vertebral centroid, superior, inferior, left, right) and a spatial prior
on the vertebra's orientation in the image frame to fix what the points cannot.

The clicks come as a landmarks file: :mod:`twinsim.imaging.landmarks_file`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.errors import TwinsimError
from twinsim.imaging.carm_geometry import PatientAxes, carm_pose
from twinsim.imaging.landmarks_file import BACKUP, CLICKABLE, Clicks
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.shape.model import ShapeModel

if TYPE_CHECKING:
    from twinsim.recon.consistency import ClickCheck

MIN_VIEW_SEPARATION_DEG = 5.0
# Three points closer to a line than this (mm, model frame) do not fix a rotation.
MIN_SPREAD_MM = 3.0


class InitializationError(TwinsimError, ValueError):
    """The landmarks or views cannot give a starting pose (too few, degenerate, outside the image)."""


def view_separation_deg(a: ProjectionGeometry, b: ProjectionGeometry) -> float:
    """Angle between the two beams' central rays."""
    return float(np.degrees(np.arccos(np.clip(a.beam_direction @ b.beam_direction, -1.0, 1.0))))


def check_views(geoms: Sequence[ProjectionGeometry]) -> None:
    if len(geoms) != 2:
        raise InitializationError(f"reconstruction needs exactly two views, got {len(geoms)}")
    if geoms[0].frame != geoms[1].frame:
        raise InitializationError(f"the two views' geometries are in different frames ({geoms[0].frame!r}, {geoms[1].frame!r})")
    sep = view_separation_deg(*geoms)
    if np.allclose(geoms[0].P, geoms[1].P, rtol=1e-9, atol=1e-9):
        raise InitializationError(
            "the two views have the same projection geometry: one image was given the other's sidecar (or the same "
            "sidecar twice); each X-ray needs the geometry it was taken with")
    if sep < MIN_VIEW_SEPARATION_DEG:
        raise InitializationError(
            f"the two views are only {sep:.1f} deg apart (need >= {MIN_VIEW_SEPARATION_DEG:.0f}): depth cannot be "
            "triangulated from nearly parallel beams; take the second X-ray from another angle")


def triangulate_dlt(Ps: Sequence[np.ndarray], uvs: Sequence[np.ndarray]) -> np.ndarray:
    """Linear triangulation (DLT) of N points seen in each of the views: ``uvs[i]`` is (N, 2) -> (N, 3)."""
    uvs = [np.asarray(u, dtype=np.float64).reshape(-1, 2) for u in uvs]
    n = len(uvs[0])
    out = np.empty((n, 3))
    for k in range(n):
        rows = []
        for P, uv in zip(Ps, uvs, strict=True):
            P = np.asarray(P, dtype=np.float64)
            rows += [uv[k, 0] * P[2] - P[0], uv[k, 1] * P[2] - P[1]]
        A = np.array(rows)
        A /= np.linalg.norm(A, axis=1, keepdims=True)  # each equation in the same units: better conditioned
        X = np.linalg.svd(A)[2][-1]
        if abs(X[3]) < 1e-12:
            raise InitializationError("a landmark triangulates to infinity (its rays are parallel)")
        out[k] = X[:3] / X[3]
    return out


@dataclass
class InitialPose:
    T_frame_model: np.ndarray  # model -> image frame (mm)
    method: str  # "landmarks" or "backup"
    landmarks: list[str]
    points_mm: np.ndarray  # triangulated (N, 3), frame
    reprojection_px: float  # mean reprojection error of the triangulated points
    check: ClickCheck | None = None  # the clicks' consistency check, where it ran (recon.consistency)


def _in_image(uv: np.ndarray, g: ProjectionGeometry) -> bool:
    return bool(0 <= uv[0] <= g.width_px and 0 <= uv[1] <= g.height_px)


def orientation_prior(geoms: Sequence[ProjectionGeometry], views: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """The vertebra's expected orientation (model axes RAS) in the geometry frame, from the C-arm's poses.

    Each acquisition knows where its source is (``T_frame_source``: tracked, or a
    calibration's) and which view the C-arm was asked for (``lao_deg``, ``cranial_deg``
    relative to the patient on the table, the convention of
    :mod:`twinsim.imaging.carm_geometry`). Undoing the view's rotation from the source's
    orientation gives the patient's axes in the frame, as seed 000 does for AP and LAT; the
    views' estimates are averaged. None when a view does not say its angles.
    """
    estimates = []
    for g, v in zip(geoms, views, strict=True):
        try:
            lao, cran = float(v["lao_deg"]), float(v["cranial_deg"])
        except (KeyError, TypeError, ValueError):
            return None
        # Patient axes (left, posterior, superior) as the basis: carm_pose then gives R_patient_carm.
        R_patient_source = carm_pose(np.zeros(3), PatientAxes(np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]), lao, cran)[:3, :3]
        R_frame_patient = g.T_frame_source_mm[:3, :3] @ R_patient_source.T
        estimates.append(R_frame_patient @ np.diag([-1.0, -1.0, 1.0]))  # RAS = (-left, -posterior, superior)
    return Rotation.from_matrix(np.array(estimates)).mean().as_matrix()


def validate_inputs(model: ShapeModel, geoms: Sequence[ProjectionGeometry], clicks: Clicks) -> None:
    """Two views apart, landmarks for both, each inside its image and named as the model names them."""
    check_views(geoms)
    if len(clicks.views) != 2:
        raise InitializationError(f"need landmarks for two views, got {len(clicks.views)}")
    for i, (view, g) in enumerate(zip(clicks.views, geoms, strict=True)):
        outside = [n for n, uv in view.items() if not _in_image(uv, g)]
        if outside:
            raise InitializationError(
                f"view {i}: landmarks {', '.join(sorted(outside))} lie outside the {g.width_px}x{g.height_px} image: "
                "the vertebra must be inside both X-rays")
    unknown = sorted((set(clicks.views[0]) | set(clicks.views[1])) - set(model.annotations))
    if unknown:
        raise InitializationError(f"unknown landmark names {', '.join(unknown)}: use {', '.join(CLICKABLE)} "
                                  f"or the backup names {', '.join(BACKUP)}")


def initial_pose(model: ShapeModel, geoms: Sequence[ProjectionGeometry], clicks: Clicks,
                 R_frame_model_prior: np.ndarray | None = None, allow_fallback: bool = True,
                 views: Sequence[dict[str, Any]] | None = None) -> InitialPose:
    """Starting pose from the clicks; see the module docstring for the fallback.

    ``R_frame_model_prior``: the vertebra's expected orientation (model axes RAS) in the
    geometry frame; by default :func:`orientation_prior` of the acquisitions' ``views``.
    """
    validate_inputs(model, geoms, clicks)
    known = set(model.annotations)
    common = [n for n in clicks.views[0] if n in clicks.views[1] and n in known]
    Ps = [g.P for g in geoms]
    pts = triangulate_dlt(Ps, [np.array([v[n] for n in common]).reshape(-1, 2) for v in clicks.views]) if common else np.zeros((0, 3))
    reproj = [np.linalg.norm(g.project(pts) - np.array([v[n] for n in common]), axis=1) for g, v in
              zip(geoms, clicks.views, strict=True)] if common else [np.zeros(0)]
    mean_reproj = float(np.mean(np.concatenate(reproj))) if common else float("nan")
    mean_pts = model.annotation_points(model.mean_mm)
    src = np.array([mean_pts[n] for n in common]).reshape(-1, 3)
    spread = np.linalg.svd(src - src.mean(0), compute_uv=False)[1] / np.sqrt(len(src)) if len(src) >= 3 else 0.0
    if len(common) >= 3 and spread >= MIN_SPREAD_MM:
        T = frames.rigid_fit(src, pts)
        return InitialPose(T, "landmarks", common, pts, mean_reproj)

    why = (f"only {len(common)} landmark(s) are marked in both views ({', '.join(common) or 'none'})" if len(common) < 3
           else f"the {len(common)} landmarks common to both views lie on a line")
    if R_frame_model_prior is None and views is not None:
        R_frame_model_prior = orientation_prior(geoms, views)
    centre = BACKUP["centroid"]
    axis_pts = [BACKUP["superior"], BACKUP["inferior"]]
    if not allow_fallback or R_frame_model_prior is None or centre not in common or not any(a in common for a in axis_pts):
        hint = ("" if allow_fallback and R_frame_model_prior is not None else
                " (the backup fallback is off, or no orientation prior: the acquisitions do not say their C-arm angles)")
        raise InitializationError(
            f"cannot initialise the pose: {why}. Mark >= 3 landmarks in both views, or the backup landmarks "
            f"'centroid' and 'superior' or 'inferior'{hint}")
    # Backup: rotate the prior so the model's superior-inferior axis meets the triangulated one; the
    # prior fixes the roll about it. Translation puts the model centroid landmark on its point.
    p = dict(zip(common, pts, strict=True))
    m = mean_pts
    if BACKUP["superior"] in p and BACKUP["inferior"] in p:
        d_img, d_mod = p[BACKUP["superior"]] - p[BACKUP["inferior"]], m[BACKUP["superior"]] - m[BACKUP["inferior"]]
    else:
        other = next(a for a in axis_pts if a in p)
        d_img, d_mod = p[other] - p[centre], m[other] - m[centre]
    R0 = np.asarray(R_frame_model_prior, dtype=np.float64)
    a = R0 @ d_mod / np.linalg.norm(d_mod)
    b = d_img / np.linalg.norm(d_img)
    axis = np.cross(a, b)
    angle = float(np.arctan2(np.linalg.norm(axis), a @ b))
    R = (frames.rotation_about_axis(axis / np.linalg.norm(axis), angle) if np.linalg.norm(axis) > 1e-9 else np.eye(3)) @ R0
    T = frames.make_transform(R, p[centre] - R @ m[centre])
    return InitialPose(T, "backup", common, pts, mean_reproj)
