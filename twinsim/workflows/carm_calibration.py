"""C-arm calibration through the HAL: a tracked bead phantom imaged at several C-arm poses.

For each view the C-arm turns, the tracker gives the C-arm marker's pose in ``ref`` (the
phantom's beads are defined there), the C-arm exposes, and the beads are found in the image
and matched to where the nominal calibration (CAD, or a pointer survey of the housings) puts
them. One least squares over all views then solves the calibration; a second matching pass
with the solved calibration and a tighter gate refits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twinsim.hal import CArm, CArmView, HalError, Operator, Tracker
from twinsim.imaging.beads import detect_beads, match_beads
from twinsim.imaging.projection import GeometryError, ProjectionGeometry
from twinsim.tracking.bead_phantom import CArmPhantom
from twinsim.tracking.calibration import CalibrationError
from twinsim.tracking.carm_calibration import MIN_BEADS_PER_SHOT, MIN_SHOTS, CArmCalibrationResult, CArmShot, calibrate_carm
from twinsim.tracking.tools import CARM_MARKER, REFERENCE
from twinsim.twin.tracker_view import ToolIndex, TrackingLost
from twinsim.workflows.calibration import read_frames

# Spread over the orbital and angular range where, in the default room, the C-arm's marker stays in the
# tracker's view (on the LAO side it comes nearer the camera than the Vega's volume allows) and the C-arm
# touches nothing.
DEFAULT_VIEWS = (CArmView("AP", 0.0, 0.0), CArmView("RAO 20", -20.0, 0.0), CArmView("RAO 30 cranial 10", -30.0, 10.0),
                 CArmView("RAO 10 caudal 20", -10.0, -20.0), CArmView("RAO 40 cranial 20", -40.0, 20.0),
                 CArmView("RAO 20 caudal 10", -20.0, -10.0), CArmView("RAO 60", -60.0, 0.0), CArmView("RAO 75", -75.0, 0.0))


@dataclass
class CArmCalibrationRun:
    result: CArmCalibrationResult
    shots: list[CArmShot]
    views: list[str]
    skipped: dict[str, str]  # view -> why it was not used
    matched_first_pass: int


def _predict(shot: CArmShot, width: int, height: int, spacing: tuple[float, float], sdd: float,
             T_ms: np.ndarray, pp: tuple[float, float]) -> np.ndarray:
    g = ProjectionGeometry(sdd, width, height, spacing, shot.T_ref_marker_mm @ T_ms, "ref", pp)
    return g.project(shot.beads_ref_mm)


def calibrate_carm_views(carm: CArm, tracker: Tracker, beads_ref_mm: np.ndarray, bead_radius_mm: float, sdd0_mm: float,
                         T_marker_source0_mm: np.ndarray, views: Sequence[CArmView] = DEFAULT_VIEWS,
                         frames_per_shot: int = 10, gate_mm: float = 14.0, operator: Operator | None = None,
                         max_residual_px: float = 1.5) -> CArmCalibrationRun:
    idx = ToolIndex(tracker)
    shots, names, images, skipped = [], [], [], {}
    width = height = 0
    spacing = (1.0, 1.0)
    for view in views:
        if operator is not None:
            operator.say(f"C-arm calibration: view {view.name}")
        try:
            carm.move_to(view)
            T_ref_marker = idx.pose_in(read_frames(tracker, frames_per_shot), CARM_MARKER, REFERENCE)
            acq = carm.acquire()
        except (HalError, TrackingLost) as exc:
            skipped[view.name] = str(exc)
            continue
        g = acq.geometry  # only the detector's size and pixel spacing are used: its datasheet values
        width, height, spacing = g.width_px, g.height_px, g.pixel_spacing_mm
        shots.append(CArmShot(np.asarray(beads_ref_mm, dtype=float), np.full((len(beads_ref_mm), 2), np.nan), T_ref_marker))
        names.append(view.name)
        images.append(acq.image)
    if len(shots) < 2:
        raise CalibrationError(f"C-arm calibration needs at least 2 usable views; skipped: {skipped}")

    def match(sdd: float, T_ms: np.ndarray, pp: tuple[float, float], gate: float) -> list[CArmShot]:
        out = []
        for shot, img in zip(shots, images, strict=True):
            try:
                pred = _predict(shot, width, height, spacing, sdd, T_ms, pp)
            except GeometryError as exc:
                raise CalibrationError(f"the nominal C-arm calibration puts the phantom behind the source: {exc}") from exc
            depth = np.median(np.linalg.norm(shot.beads_ref_mm - (shot.T_ref_marker_mm @ T_ms)[:3, 3], axis=1))
            diameter_px = 2 * bead_radius_mm * sdd / depth / spacing[0]
            found = detect_beads(img, diameter_px)
            out.append(CArmShot(shot.beads_ref_mm, match_beads(found, pred, gate), shot.T_ref_marker_mm))
        return out

    def usable(matched: list[CArmShot], stage: str) -> list[int]:
        """Shots with enough beads; the others are set aside with their reason (a bead hidden by dense anatomy)."""
        keep = []
        for k, s in enumerate(matched):
            n = int(np.isfinite(s.beads_px).all(axis=1).sum())
            if n >= MIN_BEADS_PER_SHOT:
                keep.append(k)
            else:
                skipped[names[k]] = f"{stage}: only {n} of {len(s.beads_px)} beads found (at least {MIN_BEADS_PER_SHOT} needed)"
        return keep

    gate_px = gate_mm / spacing[0]  # on the detector: the same physical gate at any read-out
    first = match(sdd0_mm, T_marker_source0_mm, (0.0, 0.0), gate_px)
    keep = usable(first, "first pass")
    if len(keep) < MIN_SHOTS:
        raise CalibrationError(f"the phantom's beads were found in fewer than {MIN_SHOTS} views (is the phantom mounted, in "
                               f"the beam, and the nominal calibration within ~10 px of the truth?); skipped: {skipped}")
    n_first = int(sum(np.isfinite(first[k].beads_px).all(axis=1).sum() for k in keep))
    res = calibrate_carm([first[k] for k in keep], width, height, spacing, sdd0_mm, T_marker_source0_mm, robust_px=1.0)
    second = match(res.sdd_mm, res.T_marker_source_mm, res.principal_offset_mm, gate_px / 3)
    keep2 = [k for k in usable(second, "second pass") if k in keep]
    if len(keep2) < MIN_SHOTS:
        raise CalibrationError(f"after the first solve, the phantom's beads matched in fewer than {MIN_SHOTS} views; "
                               f"skipped: {skipped}")
    res = calibrate_carm([second[k] for k in keep2], width, height, spacing, res.sdd_mm, res.T_marker_source_mm,
                         res.principal_offset_mm)
    if res.residual_px_rms > max_residual_px:
        raise CalibrationError(f"the C-arm calibration's beads do not agree: reprojection RMS {res.residual_px_rms:.2f} px "
                               f"(at most {max_residual_px:g} px); wrong matches or a phantom that moved. Skipped: {skipped}")
    return CArmCalibrationRun(res, [second[k] for k in keep2], [names[k] for k in keep2], skipped, n_first)


def calibrate_carm_with_phantom(carm: CArm, tracker: Tracker, phantom: CArmPhantom, views: Sequence[CArmView] = DEFAULT_VIEWS,
                                operator: Operator | None = None) -> CArmCalibrationRun:
    """Mount the phantom, calibrate over ``views``, take the phantom out again (also on failure)."""
    if operator is not None:
        operator.say("C-arm calibration: clamp the bead phantom to the patient reference.")
    phantom.mount()
    try:
        return calibrate_carm_views(carm, tracker, phantom.beads_ref_mm, phantom.bead_radius_mm, phantom.nominal_sdd_mm,
                                    phantom.nominal_T_marker_source_mm, views, operator=operator)
    finally:
        phantom.unmount()
        if operator is not None:
            operator.say("C-arm calibration done: remove the bead phantom.")
