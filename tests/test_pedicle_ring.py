"""The verification view's measurement: a pedicle's ring seen end-on, against the projected axis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from twinsim.imaging.pedicle_ring import RingNotFound, measure_ring


def _tube_end_on(size_px: int, centre_px: np.ndarray, px_per_mm: float, outer_mm: float, wall_mm: float, seed: int) -> np.ndarray:
    """A pedicle's projection along its axis: a cortical tube (chord lengths) around cancellous bone, on a sloped
    background (the rest of the vertebra), blurred by the detector and with quantum noise."""
    v, u = np.mgrid[0:size_px, 0:size_px] + 0.5
    d = np.hypot(u - centre_px[0], v - centre_px[1]) / px_per_mm
    inner = outer_mm - wall_mm

    def chord(r: float) -> np.ndarray:
        return 2.0 * np.sqrt(np.clip(r ** 2 - d ** 2, 0.0, None))

    cortex = chord(outer_mm) - chord(inner)
    cancellous = chord(inner)
    image = 1.0 * cortex + 0.25 * cancellous + 0.02 * (u + 0.5 * v) / px_per_mm + 4.0
    image = ndimage.gaussian_filter(image, 0.8 * px_per_mm * 0.3)
    rng = np.random.default_rng(seed)
    return image + rng.normal(0.0, 0.03 * image.std(), image.shape)


@pytest.mark.parametrize("offset_mm,outer_mm", [((1.2, -0.7), 4.0), ((-0.4, 1.9), 3.2), ((0.0, 0.0), 5.0),
                                                 ((2.3, 0.6), 4.5)])
def test_the_ring_offset_is_measured_within_0_3_mm(offset_mm, outer_mm):
    px_per_mm = 3.1
    axis = np.array([64.3, 61.8])
    truth = np.asarray(offset_mm)
    img = _tube_end_on(128, axis + truth * px_per_mm, px_per_mm, outer_mm, 1.0, seed=int(10 * outer_mm))
    m = measure_ring(img, axis, px_per_mm)
    assert np.linalg.norm(m.offset_mm - truth) < 0.3, (m.offset_mm, truth)
    assert abs(m.radius_mm - (outer_mm - 0.5)) < 0.8  # the brightest chord lies inside the wall
    assert m.rays_used >= 24 and m.contrast > 0


def test_no_ring_is_said_plainly():
    rng = np.random.default_rng(0)
    flat = 5.0 + rng.normal(0.0, 0.01, (96, 96))
    with pytest.raises(RingNotFound):
        measure_ring(flat, np.array([48.0, 48.0]), 3.0)
    with pytest.raises(RingNotFound, match="magnification"):
        measure_ring(flat, np.array([48.0, 48.0]), 0.0)
