"""X-rays with tracked geometry: the C-arm's calibration composed with its marker's pose at exposure.

A C-arm knows its detector, not where it stands. For each exposure the tracker gives the
C-arm marker's pose in the patient reference frame ``ref``; the C-arm calibration gives the
intrinsics and ``T_marker_source``. Their composition is the acquisition's projection
geometry in ``ref``, the frame reconstruction and planning run in. The same code serves the
simulated room and a real rig: it sees the C-arm's image, the tracker's frames and the
calibration file, nothing else.
"""

from __future__ import annotations

import numpy as np

from twinsim.hal import CArm, CArmView, Operator, Tracker
from twinsim.hal.errors import HalError
from twinsim.imaging.acquisition import Acquisition
from twinsim.tracking.carm_calibration import CArmCalibrationResult
from twinsim.tracking.tools import CARM_MARKER, REFERENCE
from twinsim.twin.tracker_view import ToolIndex
from twinsim.workflows.calibration import read_frames

FRAME = "ref"


class TrackedXrayError(HalError):
    """An exposure whose geometry cannot be known (its image does not match the C-arm calibration)."""


def acquire_tracked(carm: CArm, tracker: Tracker, calibration: CArmCalibrationResult, view: CArmView,
                    frames_per_shot: int = 10, operator: Operator | None = None) -> Acquisition:
    """Turn the C-arm to ``view``, read its marker (C-arm at rest), expose; geometry in ``ref``.

    Raises ``MotionAborted`` when the C-arm cannot turn there and ``ToolMissing`` when the
    tracker does not see the C-arm's marker or the patient reference.
    """
    if operator is not None:
        operator.say(f"X-ray: {view.name}")
    carm.move_to(view)
    T_ref_marker_mm = ToolIndex(tracker).pose_in(read_frames(tracker, frames_per_shot), CARM_MARKER, REFERENCE)
    acq = carm.acquire()
    g = acq.geometry
    if (g.width_px, g.height_px) != (calibration.width_px, calibration.height_px) or not np.allclose(
            g.pixel_spacing_mm, calibration.pixel_spacing_mm, rtol=1e-6):
        raise TrackedXrayError(carm.name, f"the image is {g.width_px}x{g.height_px} px at {g.pixel_spacing_mm} mm but the C-arm "
                                          f"was calibrated at {calibration.width_px}x{calibration.height_px} px at "
                                          f"{calibration.pixel_spacing_mm} mm: calibrate it at this read-out")
    meta = {**acq.meta, "geometry": "tracked: C-arm calibration x C-arm marker pose at exposure",
            "T_ref_carm_marker_mm": np.round(T_ref_marker_mm, 9).tolist()}
    return Acquisition(acq.image, calibration.geometry(T_ref_marker_mm, FRAME), acq.window,
                       view={"name": view.name, "lao_deg": view.lao_deg, "cranial_deg": view.cranial_deg}, meta=meta)
