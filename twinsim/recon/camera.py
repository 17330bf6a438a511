"""A C-arm view as the renderer sees it: pinhole intrinsics, extrinsics, and a cropped, reduced image grid.

The fit renders a region of interest around the vertebra at a few resolutions. Cropping shifts
the principal point; reducing by an integer factor ``f`` (average pooling) divides pixel
coordinates by ``f``. With pixel centres at index + 0.5 (see :mod:`twinsim.imaging.projection`),
``u_roi = (u - col0) / f`` keeps the centre of every reduced pixel where its block's centre is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from twinsim.imaging.projection import ProjectionGeometry


@dataclass(frozen=True)
class RoiBox:
    """Pixel box ``[col0, col1) x [row0, row1)`` of the full image."""

    col0: int
    row0: int
    col1: int
    row1: int

    @property
    def width_px(self) -> int:
        return self.col1 - self.col0

    @property
    def height_px(self) -> int:
        return self.row1 - self.row0

    def reduced(self, factor: int) -> RoiBox:
        """The box grown to a multiple of ``factor`` so it pools into whole pixels."""
        w = -(-self.width_px // factor) * factor
        h = -(-self.height_px // factor) * factor
        return RoiBox(self.col0, self.row0, self.col0 + w, self.row0 + h)


@dataclass(frozen=True)
class Camera:
    """One view for the renderer: ``K`` (3x3, px), ``viewmat`` = T_cam_frame (4x4, mm), image size."""

    K: torch.Tensor
    viewmat: torch.Tensor
    width_px: int
    height_px: int

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Camera:
        return Camera(self.K.to(device, dtype), self.viewmat.to(device, dtype), self.width_px, self.height_px)

    def project(self, points_mm: torch.Tensor) -> torch.Tensor:
        """(N, 3) points of the frame -> (N, 2) pixel coordinates of this grid."""
        pc = points_mm @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        uv = pc @ self.K.T
        return uv[:, :2] / uv[:, 2:3]


def camera_for(geom: ProjectionGeometry, box: RoiBox | None = None, factor: int = 1,
               dtype: torch.dtype = torch.float32) -> Camera:
    """The renderer's camera for ``geom`` cropped to ``box`` and reduced ``factor`` times."""
    box = (box or RoiBox(0, 0, geom.width_px, geom.height_px)).reduced(factor)
    S = np.array([[1.0 / factor, 0.0, -box.col0 / factor], [0.0, 1.0 / factor, -box.row0 / factor], [0.0, 0.0, 1.0]])
    K = S @ geom.K
    return Camera(torch.tensor(K, dtype=dtype), torch.tensor(geom.T_source_frame_mm, dtype=dtype),
                  box.width_px // factor, box.height_px // factor)


def crop_image(image: np.ndarray, box: RoiBox, factor: int = 1) -> np.ndarray:
    """The image inside ``box`` (reduced like :func:`camera_for`), pooled by ``factor``; outside is 0."""
    box = box.reduced(factor)
    out = np.zeros((box.height_px, box.width_px), dtype=np.float32)
    r0, r1 = max(box.row0, 0), min(box.row1, image.shape[0])
    c0, c1 = max(box.col0, 0), min(box.col1, image.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - box.row0 : r1 - box.row0, c0 - box.col0 : c1 - box.col0] = image[r0:r1, c0:c1]
    if factor > 1:
        out = out.reshape(out.shape[0] // factor, factor, out.shape[1] // factor, factor).mean(axis=(1, 3))
    return out
