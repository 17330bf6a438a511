"""Digitally reconstructed radiographs of the patient CT, rendered by nanodrr.

nanodrr (pure PyTorch ray marching; fused Triton kernels on CUDA) integrates the linear
attenuation coefficient along every ray from the focal spot to a detector pixel. twinsim
adds the detector: photon counts with Poisson and electronic noise, detector blur, the log
transform and a display window, as a fluoroscope does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from nanodrr.data import Subject
from nanodrr.drr.renderer import render as nanodrr_render
from scipy import ndimage

from twinsim.anatomy.ct import CTVolume
from twinsim.imaging.projection import ProjectionGeometry

DEFAULT_SAMPLES_PER_RAY = 400
# Rendering memory grows with pixels x samples; rows are rendered in bands of about this many pixels.
PIXELS_PER_CHUNK = 64 * 512


def _to_dhw(volume: np.ndarray) -> torch.Tensor:
    """Canonical (I, J, K) array -> nanodrr's (1, 1, D=K, H=J, W=I) tensor."""
    return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).permute(2, 1, 0)[None, None].contiguous()


def make_subject(values: np.ndarray, affine_mm: np.ndarray, labels: np.ndarray | None = None,
                 convert_to_mu: bool = True) -> Subject:
    """A nanodrr Subject from a canonical-order volume; world coordinates are the ``ct`` frame (mm)."""
    image = _to_dhw(values)
    label = _to_dhw(labels) if labels is not None else torch.zeros_like(image)
    v2w = torch.from_numpy(np.asarray(affine_mm, dtype=np.float64))
    w2v = torch.linalg.inv(v2w)
    centre = affine_mm[:3, :3] @ ((np.array(values.shape) - 1) / 2) + affine_mm[:3, 3]
    return Subject(image, label, v2w.float(), w2v.float(), Subject._make_voxel_to_grid(image.shape),
                   torch.tensor(centre, dtype=torch.float32),
                   max_label=int(labels.max()) if labels is not None else None, convert_to_mu=convert_to_mu)


def render_line_integrals(subject: Subject, geom: ProjectionGeometry, n_samples: int = DEFAULT_SAMPLES_PER_RAY,
                          device: str | torch.device = "cpu") -> np.ndarray:
    """Ray integrals through ``subject`` (already on ``device``) for every pixel: (C, H, W), C = 1 or one per label class."""
    if geom.frame != "ct":
        raise ValueError(f"DRR geometry must be in the ct frame, got {geom.frame!r}")
    rows_per_chunk = max(1, PIXELS_PER_CHUNK // geom.width_px)
    out = []
    with torch.no_grad():
        for r0 in range(0, geom.height_px, rows_per_chunk):
            g = geom.rows(r0, min(geom.height_px, r0 + rows_per_chunk))
            k_inv = torch.tensor(np.linalg.inv(g.K), dtype=torch.float32, device=device)[None]
            rt_inv = torch.tensor(g.T_frame_source_mm, dtype=torch.float32, device=device)[None]
            sdd = torch.tensor([g.sdd_mm], dtype=torch.float32, device=device)
            img = nanodrr_render(subject, k_inv, rt_inv, sdd, g.height_px, g.width_px, n_samples=n_samples)
            out.append(img[0].cpu().numpy())
    return np.concatenate(out, axis=1)


@dataclass(frozen=True)
class DetectorModel:
    """What the flat panel adds to the ideal line integral. Defaults: a clean, noiseless image."""

    photons_per_pixel: float = 0.0  # unattenuated photon count; 0 = no quantum (Poisson) noise
    electronic_noise: float = 0.0  # Gaussian noise, in photons
    blur_sigma_mm: float = 0.0  # detector point spread (Gaussian) on the panel
    window_percentiles: tuple[float, float] = (1.0, 99.8)  # automatic display window, over the patient

    @classmethod
    def realistic(cls) -> DetectorModel:
        return cls(photons_per_pixel=2.0e4, electronic_noise=5.0, blur_sigma_mm=0.4)


def expose(line_integral: np.ndarray, geom: ProjectionGeometry, detector: DetectorModel,
           seed: int | None = 0) -> tuple[np.ndarray, tuple[float, float]]:
    """Detector image from ideal line integrals: returns (display image in [0, 1], window).

    The display is the log-attenuation ``-ln(I / I0)`` (bone bright), windowed between two
    percentiles; the window ``(low, high)`` is in log-attenuation units so the original
    values can be recovered from a stored image.
    """
    rng = np.random.default_rng(seed)
    L = np.asarray(line_integral, dtype=np.float64)
    sigma_px = np.array([detector.blur_sigma_mm / geom.pixel_spacing_mm[1], detector.blur_sigma_mm / geom.pixel_spacing_mm[0]])
    if detector.photons_per_pixel > 0:
        n0 = detector.photons_per_pixel
        counts = n0 * np.exp(-L)
        if np.any(sigma_px > 0):
            counts = ndimage.gaussian_filter(counts, sigma_px)
        counts = rng.poisson(counts).astype(np.float64)
        if detector.electronic_noise > 0:
            counts += rng.normal(0.0, detector.electronic_noise, counts.shape)
        L = -np.log(np.clip(counts, 0.5, None) / n0)
    else:
        if np.any(sigma_px > 0):
            L = -np.log(ndimage.gaussian_filter(np.exp(-L), sigma_px))
        if detector.electronic_noise > 0:
            L = L + rng.normal(0.0, detector.electronic_noise * 1e-3, L.shape)
    # Window on the pixels whose rays cross the patient, as automatic brightness control does;
    # the unattenuated beam around the body (or past the CT's field of view) would wash it out.
    body = L > 0.1 * float(np.percentile(L, 99.9))
    if body.sum() > 100:
        lo, hi = (float(v) for v in np.percentile(L[body], detector.window_percentiles))
    else:  # an empty beam, at most a few small objects in it (a phantom's beads): keep them below saturation
        lo, hi = float(np.percentile(L, detector.window_percentiles[0])), float(L.max())
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    return np.clip((L - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), (lo, hi)


class DRRRenderer:
    """Renders X-rays of one CT; the nanodrr Subjects are built once and reused."""

    def __init__(self, ct: CTVolume, device: str | torch.device = "cpu", n_samples: int = DEFAULT_SAMPLES_PER_RAY) -> None:
        self.ct = ct
        self.device = device
        self.n_samples = n_samples
        # Moving a Subject re-derives attenuation from HU over the whole volume: do it once, here.
        self._subject = make_subject(ct.hu, ct.affine_mm).to(device)
        _ = self._subject.image

    def line_integrals(self, geom: ProjectionGeometry) -> np.ndarray:
        """Ideal log-attenuation image (H, W): the integral of mu along each ray (unitless)."""
        return render_line_integrals(self._subject, geom, self.n_samples, self.device)[0]

    def render(self, geom: ProjectionGeometry, detector: DetectorModel | None = None,
               seed: int | None = 0) -> tuple[np.ndarray, tuple[float, float]]:
        return expose(self.line_integrals(geom), geom, detector or DetectorModel(), seed)
