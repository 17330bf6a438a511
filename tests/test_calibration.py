"""Calibrations recover known transforms from noisy simulated tracker data, within noise-derived bounds."""

import numpy as np
import pytest

from twinsim import frames
from twinsim.tracking.calibration import CalibrationError, pivot_calibrate, pivot_motion
from twinsim.tracking.markers import load_marker
from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega

TIP_MM = np.array([5.0, -140.0, -25.0])  # the pointer's true tip in its tool frame (unknown to the calibration)
CAMERA = frames.make_transform(np.eye(3), [0.0, 0.0, -1.5])
DIVOT = frames.make_transform(frames.rotation_about_axis([1, 0, 0], np.pi), [0.02, 0.01, 0.0])  # faces the camera


def tracked_pivot(n=150, seed=0, motion=None):
    poses = motion or pivot_motion(DIVOT, TIP_MM, n, seed=seed)
    state = {"i": 0}
    vega = SimulatedVega({"seed": seed, "latency s": 0.0},
                         [SimulatedTool(1, load_marker("pointer"), lambda: poses[state["i"]])], lambda: CAMERA)
    vega.start_tracking()
    out = []
    for i in range(len(poses)):
        state["i"] = i
        out.append(vega.get_frame()[3][0])
    return np.array(out)


def test_pivot_recovers_the_tip_within_its_predicted_uncertainty():
    res = pivot_calibrate(tracked_pivot())
    err = res.tip_offset_mm - TIP_MM
    assert np.all(np.abs(err) < 4.0 * res.tip_offset_sd_mm + 1e-3), (err, res.tip_offset_sd_mm)
    assert np.linalg.norm(err) < 0.5
    divot_cam = frames.transform_points(frames.scale_translation(frames.invert(CAMERA), 1000.0), DIVOT[:3, 3] * 1000.0)
    assert np.linalg.norm(res.pivot_point_mm - divot_cam) < 0.5
    assert 0.01 < res.residual_rms_mm < 0.5  # the tracker's noise, seen at the tip


def test_pivot_refuses_degenerate_data():
    with pytest.raises(CalibrationError, match="at least 10"):
        pivot_calibrate(tracked_pivot(n=5))
    one_axis = [frames.make_transform(DIVOT[:3, :3] @ frames.rotation_about_axis([1, 0, 0], a),
                                      DIVOT[:3, 3] - DIVOT[:3, :3] @ frames.rotation_about_axis([1, 0, 0], a) @ TIP_MM * 1e-3)
                for a in np.linspace(-0.4, 0.4, 40)]
    with pytest.raises(CalibrationError, match="one axis only"):
        pivot_calibrate(tracked_pivot(motion=one_axis))
    with pytest.raises(CalibrationError, match=r"\(N, 4, 4\)"):
        pivot_calibrate(np.zeros((10, 3, 3)))
    # Missing frames (NaN) are dropped, not used.
    poses = tracked_pivot(n=40)
    poses[::2, :3, :] = np.nan
    assert pivot_calibrate(poses).n_frames == 20
