"""The pedicle's ring in a view down the planned axis ("bull's-eye"), measured against the axis.

Seen along its axis, a pedicle's cortex is a tube end-on: the X-ray crosses the most cortical
bone where it runs tangent to the wall, so the wall shows as a bright ring around the darker
cancellous core. If the planned axis is the pedicle's, the axis projects onto the ring's centre;
an axis off by a millimetre sits a millimetre off the centre. That offset, measured in the image
where the clicks and the shape model have no say, is what a clinician checks before the needle
goes in.

The ring is found along rays from the projected axis point: on each ray the brightest point within
the search band (sub-pixel, by a parabola through the peak and its neighbours), then a circle fitted
to those points with outliers dropped (rays that cross another bone's shadow). The result is in
pixels and, with the view's magnification at the pedicle, in millimetres at the vertebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from twinsim.errors import TwinsimError

N_RAYS = 72
MIN_RAYS = 24  # rays that must agree on the ring for a measurement
MIN_PROMINENCE_SD = 6.0  # the ring's rise over each ray's median, in SDs of the smoothed image's noise
OUTLIER_PX = 1.5  # a ray's ring point further than this from the fitted circle is dropped (px, after the first fit)


class RingNotFound(TwinsimError, ValueError):
    """No pedicle ring around the axis point: the view is not down a pedicle, or the ring is hidden."""


@dataclass(frozen=True)
class RingMeasurement:
    centre_px: np.ndarray  # (u, v) of the ring's centre
    radius_mm: float
    offset_mm: np.ndarray  # ring centre minus the projected axis point, (u, v) directions, mm at the vertebra
    rays_used: int
    contrast: float  # ring brightness over the core's, in the image's units

    @property
    def offset_norm_mm(self) -> float:
        return float(np.linalg.norm(self.offset_mm))

    def summary(self) -> dict[str, object]:
        return {"centre_px": self.centre_px.round(2).tolist(), "radius_mm": round(self.radius_mm, 2),
                "offset_mm": self.offset_mm.round(2).tolist(), "offset_norm_mm": round(self.offset_norm_mm, 2),
                "rays_used": self.rays_used, "contrast": round(self.contrast, 4)}


def _circle(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares circle (Kasa): centre and radius."""
    A = np.c_[2 * points, np.ones(len(points))]
    b = np.sum(points ** 2, axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    centre = sol[:2]
    return centre, float(np.sqrt(max(sol[2] + centre @ centre, 0.0)))


def measure_ring(image: np.ndarray, axis_px: np.ndarray, px_per_mm: float, radius_range_mm: tuple[float, float] = (1.5, 9.0),
                 smoothing_px: float = 1.0) -> RingMeasurement:
    """The pedicle ring around ``axis_px`` (u, v; pixel centres at +0.5) in ``image`` (bright = attenuating)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise RingNotFound(f"the verification image must be a finite 2D array, got shape {img.shape}")
    if px_per_mm <= 0:
        raise RingNotFound(f"the magnification must be positive, got {px_per_mm} px/mm")
    smooth = ndimage.gaussian_filter(img, smoothing_px) if smoothing_px > 0 else img
    r0, r1 = radius_range_mm[0] * px_per_mm, radius_range_mm[1] * px_per_mm
    radii = np.arange(r0, r1, 0.25)
    if len(radii) < 5:
        raise RingNotFound("the search band holds under 2 pixels: the view is too small for the pedicle")
    angles = np.linspace(0.0, 2 * np.pi, N_RAYS, endpoint=False)
    dirs = np.c_[np.cos(angles), np.sin(angles)]
    pts = axis_px[None, None, :] + radii[None, :, None] * dirs[:, None, :]  # (rays, radii, uv)
    # map_coordinates wants (row, col) of pixel centres: v - 0.5, u - 0.5.
    prof = ndimage.map_coordinates(smooth, [pts[..., 1] - 0.5, pts[..., 0] - 0.5], order=1, mode="nearest")
    core = float(np.median(ndimage.map_coordinates(smooth, [[axis_px[1] - 0.5], [axis_px[0] - 0.5]], order=1)))
    ring_pts, peaks, used = [], [], []
    for i in range(N_RAYS):
        k = int(np.argmax(prof[i]))
        if k == 0 or k == len(radii) - 1:
            continue  # the brightest point at the band's edge: no ring on this ray
        a, b, c = prof[i, k - 1], prof[i, k], prof[i, k + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        r = radii[k] + shift * (radii[1] - radii[0])
        ring_pts.append(axis_px + r * dirs[i])
        peaks.append(b)
        used.append(i)
    if len(ring_pts) < MIN_RAYS:
        raise RingNotFound(f"only {len(ring_pts)} of {N_RAYS} rays from the axis cross a ring; the view does not look "
                           "down a pedicle")
    P = np.array(ring_pts)
    keep = np.ones(len(P), dtype=bool)
    for _ in range(3):
        centre, radius = _circle(P[keep])
        resid = np.abs(np.linalg.norm(P - centre, axis=1) - radius)
        new = resid <= max(OUTLIER_PX, 2.5 * float(np.median(resid[keep])))
        if new.sum() < MIN_RAYS:
            raise RingNotFound(f"the ring points do not lie on one circle ({int(new.sum())} of {len(P)} agree)")
        if np.array_equal(new, keep):
            break
        keep = new
    centre, radius = _circle(P[keep])
    contrast = float(np.median(np.array(peaks)[keep]) - core)
    # The ring must stand out of the noise: each ray's peak over that ray's median, against the smoothed image's
    # noise (from the raw pixels' neighbour differences, which the anatomy hardly touches).
    prominence = float(np.median(np.array(peaks)[keep] - np.median(prof[np.array(used)[keep]], axis=1)))
    u0, v0 = int(axis_px[0]), int(axis_px[1])
    half = int(np.ceil(r1)) + 2
    patch = img[max(v0 - half, 0):v0 + half, max(u0 - half, 0):u0 + half]
    diffs = np.diff(patch, axis=1).ravel()
    noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2.0)
    noise_smoothed = noise / (2.0 * np.sqrt(np.pi) * smoothing_px) if smoothing_px > 0 else noise
    if contrast <= 0 or prominence < MIN_PROMINENCE_SD * noise_smoothed:
        raise RingNotFound(f"no ring stands out around the axis (its rise {prominence:.3g} against noise {noise_smoothed:.3g}): "
                           "no pedicle cortex seen end-on")
    return RingMeasurement(centre, radius / px_per_mm, (centre - axis_px) / px_per_mm, int(keep.sum()), contrast)
