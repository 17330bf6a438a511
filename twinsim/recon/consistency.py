"""Do the clicks and the two geometries agree? Checked before any fit, in milliseconds.

Every landmark marked in both views is triangulated (DLT) and the shape model's mean
landmarks are fitted to the points rigidly. Each click is then compared with where the
fitted landmark projects in its view, in millimetres at the vertebra, against what the stated
click noise, the model's own shape variation at that landmark and a person's definitional
spread allow. That one residual catches both kinds of disagreement: a click off its epipolar
line (the views disagree) and a set of points no vertebra has (a mirrored or transposed set).

When the clicks as given do not fit, named mistakes are tried:

- left and right swapped in one view or in both: corrected when the swapped set fits;
- the views in the other order (or the two sidecars exchanged): refused, with the cause;
- one landmark alone off the rest: refused, and said to be on the vertebra above or below
  when its offset runs along the spine by half a vertebra or more.

A person who clicks everything three landmark-widths off is refused too: no fit could follow
clicks the geometry cannot explain, and saying so before a minute of fitting is the point.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.landmarks_file import Clicks
from twinsim.imaging.projection import GeometryError, ProjectionGeometry
from twinsim.recon.initialization import InitializationError, InitialPose, initial_pose, triangulate_dlt, validate_inputs
from twinsim.shape.model import ShapeModel

log = logging.getLogger(__name__)

# A click more than this many of its expected SDs from the fitted landmark is inconsistent. With 9
# landmarks in 2 views the chance that honest clicks pass one such bound is about 1 in 200.
MAX_SD = 4.5
# How far what a person marks (the middle of a shadow, the end of an outline) lies from the model's 3D
# landmark, SD per axis (mm): a tip is where its outline ends in that view, a centre is better defined.
DEFINITION_SD_MM = {"spinous_process_tip": 3.0, "left_transverse_process_tip": 3.0, "right_transverse_process_tip": 3.0}
DEFAULT_DEFINITION_SD_MM = 1.5
# An offset along the spine of at least this fraction of the vertebral pitch reads as the neighbour.
NEIGHBOUR_FRACTION = 0.5
LEFT_RIGHT = (("left_pedicle_centre", "right_pedicle_centre"),
              ("left_transverse_process_tip", "right_transverse_process_tip"))
SHAPE_SAMPLES = 300
# With this many landmarks each is also tested against the others alone, its expected SD then grown by the
# others' pose error (about half an SD at a tip, from 4-8 points).
MIN_FOR_LEAVE_ONE_OUT = 5
LEAVE_ONE_OUT_INFLATION = 1.25
# A swap is taken only when it is this much likelier than the clicks as given (chi-square units; 25 is a
# likelihood ratio of e^12.5): large click noise hides a swap from the worst-click bound, not from the likelihood.
MIN_CHI2_GAIN = 25.0


class ClickConsistencyError(InitializationError):
    """The clicks and the two geometries disagree in a way no correction explains."""


@dataclass(frozen=True)
class ViewFiles:
    """What the files say about one view: its image's name and the image its sidecar was written for."""

    image: str | None = None
    sidecar_image: str | None = None


@dataclass
class _Fit:
    names: list[str]
    residual_mm: np.ndarray  # (N, 2): each landmark's click against the fitted landmark, per view
    worst_sd: float
    T_frame_model: np.ndarray
    chi2: float  # sum of the squared residuals in SDs: the hypotheses' likelihoods compare through it


@dataclass
class ClickCheck:
    """The verdict on a set of clicks, and the clicks to fit (as given, or corrected)."""

    clicks: Clicks
    checked: bool  # False when too few landmarks are in both views to test anything
    correction: str | None = None
    worst_sd: float = float("nan")
    residual_mm: dict[str, list[float]] = field(default_factory=dict)
    tried: dict[str, float] = field(default_factory=dict)  # hypothesis -> its worst click, in SDs

    def summary(self) -> dict[str, Any]:
        return {"checked": self.checked, "correction": self.correction, "worst_click_sd": self.worst_sd,
                "max_sd": MAX_SD, "residual_mm": self.residual_mm, "tried": self.tried}


_SPREAD: dict[int, tuple[ShapeModel, dict[str, float]]] = {}


def landmark_spread_mm(model: ShapeModel) -> dict[str, float]:
    """Each landmark's spread across the model's shapes after a rigid fit, SD per axis (mm; sampled once per model)."""
    if id(model) in _SPREAD and _SPREAD[id(model)][0] is model:
        return _SPREAD[id(model)][1]
    names = list(model.annotations)
    # Landmarks are linear in the vertices, so in the coefficients: mean + sum_k b_k std_k mode_k, at the landmarks.
    mean = np.array([model.annotations[n].evaluate(model.mean_mm) for n in names])
    modes = np.array([[model.annotations[n].evaluate(m) for n in names] for m in model.modes]) * model.std_mm[:, None, None]
    coeffs = np.random.default_rng(0).normal(size=(SHAPE_SAMPLES, model.n_modes))
    dev = [frames.transform_points(frames.rigid_fit(pts, mean), pts) - mean for pts in mean + np.tensordot(coeffs, modes, axes=1)]
    sd = np.sqrt(np.mean(np.sum(np.square(dev), axis=2), axis=0) / 3.0)
    _SPREAD[id(model)] = (model, dict(zip(names, sd.tolist(), strict=True)))
    return _SPREAD[id(model)][1]


def _expected_sd(name: str, click_sigma_mm: float, spread: dict[str, float]) -> float:
    """A click's expected distance from the fitted landmark, per axis: noise, definition and shape (mm)."""
    return float(np.sqrt(click_sigma_mm ** 2 + DEFINITION_SD_MM.get(name, DEFAULT_DEFINITION_SD_MM) ** 2
                         + spread.get(name, 0.0) ** 2))


def _fit(model: ShapeModel, geoms: Sequence[ProjectionGeometry], views: Sequence[dict[str, np.ndarray]],
         names: Sequence[str], click_sigma_mm: float) -> _Fit | None:
    names = list(names)
    if len(names) < 3:
        return None
    mean = model.annotation_points(model.mean_mm)
    src = np.array([mean[n] for n in names])
    try:
        pts = triangulate_dlt([g.P for g in geoms], [np.array([v[n] for n in names]) for v in views])
        T = frames.rigid_fit(src, pts)
        pred = frames.transform_points(T, src)
        res = np.empty((len(names), 2))
        for j, (g, v) in enumerate(zip(geoms, views, strict=True)):
            uv = g.project(pred)
            for i, n in enumerate(names):
                res[i, j] = np.linalg.norm(uv[i] - v[n]) / g.px_per_mm_at(pred[i])
    except (InitializationError, GeometryError, np.linalg.LinAlgError):
        return None  # rays that never meet, or points behind a source: this arrangement is simply wrong
    spread = landmark_spread_mm(model)
    sd = np.array([_expected_sd(n, click_sigma_mm, spread) for n in names])
    z = res / sd[:, None]
    worst = float(np.max(z))
    if len(names) >= MIN_FOR_LEAVE_ONE_OUT:
        # Each landmark also against where the others alone put it: a fit that includes an outlier moves
        # towards it and hides part of it (a tip far out pulls the rotation).
        keep = np.ones(len(names), dtype=bool)
        for i in range(len(names)):
            keep[i] = False
            here = frames.transform_points(frames.rigid_fit(src[keep], pts[keep]), src[i][None])
            for g, v in zip(geoms, views, strict=True):
                r = np.linalg.norm(g.project(here)[0] - v[names[i]]) / g.px_per_mm_at(here[0])
                worst = max(worst, float(r / (LEAVE_ONE_OUT_INFLATION * sd[i])))
            keep[i] = True
    return _Fit(names, res, worst, T, float(np.sum(z ** 2)))


def _swapped(view: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(view)
    for a, b in LEFT_RIGHT:
        if a in view and b in view:
            out[a], out[b] = view[b], view[a]
        elif a in view or b in view:  # one side only: the name alone says which side it is
            k, other = (a, b) if a in view else (b, a)
            out[other] = out.pop(k)
    return out


def _has_pair(view: dict[str, np.ndarray]) -> bool:
    return any(a in view or b in view for a, b in LEFT_RIGHT)


def _label(i: int, files: Sequence[ViewFiles]) -> str:
    name = files[i].image if i < len(files) else None
    return f"view {i + 1}" + (f" ({name})" if name else "")


def check_clicks(model: ShapeModel, geoms: Sequence[ProjectionGeometry], clicks: Clicks, click_sigma_mm: float,
                 files: Sequence[ViewFiles] = ()) -> ClickCheck:
    """The clicks to fit, checked against the two geometries; raises :class:`ClickConsistencyError`."""
    views = clicks.views
    known = set(model.annotations)
    names = [n for n in views[0] if n in views[1] and n in known]
    given = _fit(model, geoms, views, names, click_sigma_mm)
    if given is None:
        return ClickCheck(clicks, checked=False)
    tried = {"as given": given.worst_sd}

    def accepted(fit: _Fit, new_views: list[dict[str, np.ndarray]], correction: str | None) -> ClickCheck:
        out = Clicks(new_views, clicks.level, list(clicks.images))
        return ClickCheck(out, True, correction, fit.worst_sd,
                          {n: fit.residual_mm[i].round(2).tolist() for i, n in enumerate(fit.names)}, tried)

    # Left and right swapped in one view, or in both: a mirrored set that no rotation brings onto a vertebra.
    swaps: list[tuple[str, list[dict[str, np.ndarray]]]] = []
    for k in (0, 1):
        if _has_pair(views[k]):
            swaps.append((f"left and right swapped in {_label(k, files)}",
                          [_swapped(v) if i == k else v for i, v in enumerate(views)]))
    if _has_pair(views[0]) and _has_pair(views[1]):
        swaps.append(("left and right swapped in both views", [_swapped(v) for v in views]))
    best: tuple[_Fit, str, list[dict[str, np.ndarray]]] | None = None
    for what, new in swaps:
        common = [n for n in new[0] if n in new[1] and n in known]
        fit = _fit(model, geoms, new, common, click_sigma_mm)
        if fit is None:
            continue
        tried[what] = fit.worst_sd
        # A swap must pass and be far likelier than the clicks as given: in a view where left and right
        # project onto each other, a swap changes nothing and is no explanation.
        if fit.worst_sd <= MAX_SD and given.chi2 - fit.chi2 >= MIN_CHI2_GAIN and (best is None or fit.chi2 < best[0].chi2):
            best = (fit, what, new)
    if given.worst_sd <= MAX_SD and best is None:
        return accepted(given, list(views), None)
    exchanged = _fit(model, list(reversed(geoms)), views, names, click_sigma_mm)
    if exchanged is not None:
        tried["views exchanged"] = exchanged.worst_sd
        # Exchanged views can look like a mirror (a pair of views symmetric about the patient's midline): the
        # explanation that fits better wins, and a wrong order is never "corrected".
        if exchanged.worst_sd <= MAX_SD and (best is None or exchanged.chi2 < best[0].chi2):
            raise ClickConsistencyError(_order_message(clicks, files, given.worst_sd, exchanged.worst_sd))
    if best is not None:
        log.warning("clicks: %s; corrected (worst click %.1f SD as given, %.1f SD corrected)", best[1], given.worst_sd,
                    best[0].worst_sd)
        return accepted(best[0], best[2], best[1] + ": corrected")

    one = _one_landmark(model, geoms, views, names, click_sigma_mm, files)
    if one is not None:
        raise ClickConsistencyError(one)
    i, j = np.unravel_index(np.argmax(given.residual_mm), given.residual_mm.shape)
    raise ClickConsistencyError(
        f"the clicks and the X-rays' geometries disagree: {given.names[i]} in {_label(int(j), files)} is "
        f"{given.residual_mm[i, j]:.1f} mm from where the other clicks put it ({given.worst_sd:.1f} SD at click noise "
        f"{click_sigma_mm:g} mm; no left/right swap, view order or single landmark explains it). Check that the clicks "
        "are on the target vertebra in both images, that each image has its own sidecar, and the stated click noise")


def _order_message(clicks: Clicks, files: Sequence[ViewFiles], given_sd: float, exchanged_sd: float) -> str:
    why = []
    listed = [str(Path(x).name) if x else None for x in clicks.images[:2]]
    images = [f.image for f in files[:2]]
    if len(images) == 2 and all(images) and listed == images[::-1]:
        why.append(f"the landmarks file lists its views for {listed[0]}, {listed[1]}, the other order from the images "
                   f"given ({images[0]}, {images[1]})")
    for f in files[:2]:
        if f.image and f.sidecar_image and Path(f.sidecar_image).name != f.image:
            why.append(f"the sidecar of {f.image} was written for {f.sidecar_image}")
    cause = "; ".join(why) if why else ("either the landmarks file's views are in the other order from the images, or "
                                         "the two images' sidecars belong to each other")
    return (f"the clicks fit the X-rays only with the two views exchanged ({exchanged_sd:.1f} SD against "
            f"{given_sd:.1f} SD as given): {cause}. Give the images in the landmarks file's order, with their own sidecars")


def _one_landmark(model: ShapeModel, geoms: Sequence[ProjectionGeometry], views: Sequence[dict[str, np.ndarray]],
                  names: list[str], click_sigma_mm: float, files: Sequence[ViewFiles]) -> str | None:
    """Which single landmark, left out, lets the rest fit; and where it lies from its place."""
    if len(names) < 4:
        return None
    best: tuple[float, str, _Fit] | None = None
    for n in names:
        rest = _fit(model, geoms, views, [m for m in names if m != n], click_sigma_mm)
        if rest is not None and rest.worst_sd <= MAX_SD and (best is None or rest.worst_sd < best[0]):
            best = (rest.worst_sd, n, rest)
    if best is None:
        return None
    _, name, rest = best
    mean = model.annotation_points(model.mean_mm)
    T = rest.T_frame_model
    here = frames.transform_points(T, mean[name][None])[0]
    up = T[:3, :3] @ (mean["superior_endplate_centre"] - mean["inferior_endplate_centre"]) if \
        "superior_endplate_centre" in mean and "inferior_endplate_centre" in mean else T[:3, 2] * 25.0
    pitch_mm = float(np.linalg.norm(up)) * 1.3  # endplate to endplate, plus the disc
    sd = _expected_sd(name, click_sigma_mm, landmark_spread_mm(model))
    off_views, along = [], []
    for j, (g, v) in enumerate(zip(geoms, views, strict=True)):
        uv0 = g.project(here[None])[0]
        scale = g.px_per_mm_at(here)
        offset = (v[name] - uv0) / scale
        if np.linalg.norm(offset) / sd <= MAX_SD:
            continue
        axis = g.project((here + up / np.linalg.norm(up))[None])[0] - uv0
        axis /= max(np.linalg.norm(axis), 1e-9)
        off_views.append((j, float(np.linalg.norm(offset))))
        along.append(float(offset @ axis))
    if not off_views:
        return None
    where = " and ".join(_label(j, files) for j, _ in off_views)
    size = max(d for _, d in off_views)
    if along and all(abs(a) >= NEIGHBOUR_FRACTION * pitch_mm for a in along) and \
            all(abs(a) >= 0.7 * d for a, (_, d) in zip(along, off_views, strict=True)):
        side = "above" if np.mean(along) > 0 else "below"
        return (f"landmark {name} in {where} lies {size:.0f} mm from where the other clicks put it, along the spine: it is "
                f"likely on the vertebra {side} the target. Mark it again on the target vertebra")
    return (f"landmark {name} in {where} lies {size:.1f} mm from where the other clicks put it (at most "
            f"{MAX_SD * sd:.1f} mm expected at click noise {click_sigma_mm:g} mm). Mark it again, or leave it out")


def files_of(acquisitions: Sequence[Acquisition]) -> list[ViewFiles]:
    return [ViewFiles(a.path.name if a.path is not None else None, a.sidecar_image) for a in acquisitions]


def checked_initial_pose(model: ShapeModel, acquisitions: Sequence[Acquisition], clicks: Clicks,
                         click_sigma_mm: float) -> InitialPose:
    """The starting pose from clicks that passed :func:`check_clicks` (corrected where a left/right swap explains them)."""
    geoms = [a.geometry for a in acquisitions]
    validate_inputs(model, geoms, clicks)
    return initial_pose_from(model, acquisitions, check_clicks(model, geoms, clicks, click_sigma_mm, files_of(acquisitions)))


def initial_pose_from(model: ShapeModel, acquisitions: Sequence[Acquisition], check: ClickCheck) -> InitialPose:
    """The starting pose from clicks already checked, carrying the check (and any correction) into the reconstruction."""
    init = initial_pose(model, [a.geometry for a in acquisitions], check.clicks, views=[a.view for a in acquisitions])
    init.check = check
    return init
