"""Image similarity between rendered and acquired X-rays, and the shape prior.

A loss is anything with the :class:`ImageLoss` call signature: it gets the rendered images and
the acquired ones (one per view, same grid, same region of interest) and the grid's pixel size
at the vertebra (mm), and returns a scalar to minimise. The fit only talks to that interface, so a learned similarity (seed 000's multi-view
ViT) can replace the hand-made ones without touching the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F


class ImageLoss(Protocol):
    name: str

    def __call__(self, rendered: Sequence[torch.Tensor], target: Sequence[torch.Tensor], pixel_mm: float) -> torch.Tensor: ...


def ncc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalized cross-correlation of two same-shape images, in [-1, 1]."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + eps)


def gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) image (reflect padding)."""
    if sigma_px <= 0:
        return image
    r = max(1, int(math.ceil(3 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    im = image[None, None]
    im = F.conv2d(F.pad(im, (r, r, 0, 0), mode="reflect"), k.reshape(1, 1, 1, -1))
    im = F.conv2d(F.pad(im, (0, 0, r, r), mode="reflect"), k.reshape(1, 1, -1, 1))
    return im[0, 0]


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (d/du, d/dv) on the interior, (H-2, W-2) each."""
    return (image[1:-1, 2:] - image[1:-1, :-2]) * 0.5, (image[2:, 1:-1] - image[:-2, 1:-1]) * 0.5


class NCCLoss:
    """1 - NCC, averaged over the views (the plain baseline)."""

    name = "ncc"

    def __call__(self, rendered: Sequence[torch.Tensor], target: Sequence[torch.Tensor], pixel_mm: float = 1.0) -> torch.Tensor:
        return 1.0 - torch.stack([ncc(r, t) for r, t in zip(rendered, target, strict=True)]).mean()


class GradientNCCLoss:
    """NCC plus multi-scale gradient NCC of high-passed images, averaged over the views.

    The high-pass (image minus its blur at ``highpass_mm``) removes what the vertebra model
    cannot explain and would otherwise pull it: the ramp of the body outline and soft tissue
    across the region of interest. 10 mm keeps the vertebral body and the pedicles (5 mm cut into
    them; on the benchmark's L1 and T12 it gave the best DICE and HD95 of 0, 5 and 10 mm). Gradient correlation at several blur scales then weighs the
    vertebra's edges (cortex, pedicle rings, endplates); the coarse scales widen the basin.
    """

    name = "ncc+gradncc"

    def __init__(self, scales_px: Sequence[float] = (0.0, 1.0, 2.0), ncc_weight: float = 0.5,
                 highpass_mm: float = 10.0) -> None:
        self.scales_px = tuple(scales_px)
        self.ncc_weight = ncc_weight
        self.highpass_mm = highpass_mm

    def view_similarity(self, r: torch.Tensor, t: torch.Tensor, pixel_mm: float = 1.0) -> torch.Tensor:
        if self.highpass_mm > 0:
            r = r - gaussian_blur(r, self.highpass_mm / pixel_mm)
            t = t - gaussian_blur(t, self.highpass_mm / pixel_mm)
        terms = []
        for s in self.scales_px:
            rb, tb = gaussian_blur(r, s), gaussian_blur(t, s)
            (rx, ry), (tx, ty) = image_gradients(rb), image_gradients(tb)
            terms.append(0.5 * (ncc(rx, tx) + ncc(ry, ty)))
        g = torch.stack(terms).mean()
        return (self.ncc_weight * ncc(r, t) + g) / (1.0 + self.ncc_weight)

    def __call__(self, rendered: Sequence[torch.Tensor], target: Sequence[torch.Tensor], pixel_mm: float = 1.0) -> torch.Tensor:
        return 1.0 - torch.stack([self.view_similarity(r, t, pixel_mm) for r, t in zip(rendered, target, strict=True)]).mean()


def shape_prior(coeffs_sd: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of shape coefficients given in standard deviations."""
    return (coeffs_sd**2).sum()


LOSSES: dict[str, type] = {"ncc": NCCLoss, "ncc+gradncc": GradientNCCLoss}
