"""X-ray-like rendering of a vertebra as 3D Gaussians, differentiable in their positions.

Each shape-model vertex carries a 3D Gaussian: isotropic, or flattened along the surface
normal. Its projection is a 2D Gaussian with the perspective-projected covariance (the EWA
splatting approximation). Two images are summed, both additive like attenuation, with no depth
order and no alpha-compositing (unlike gsplat's own rasterizer, which composites front to back):

- **shell** (cortical bone): each Gaussian is a blob of unit density; its line integral along
  a ray is the 2D Gaussian scaled by its integral through the centre. Bright rims where the
  ray grazes the surface, as cortex looks on a radiograph.
- **solid** (the whole bone at uniform density): the chord length of every ray through the
  closed surface, from the same splats. A ray's chord is the sum over its surface crossings of
  +/- the crossing's distance from the source (+ leaving, - entering). Each vertex's surface
  patch covers the detector with a normalized 2D Gaussian of the patch's projected area,
  signed by whether the normal faces away from the source. Distances are taken relative to the
  vertebra's depth, so imperfect coverage costs millimetres, not the 600 mm source distance.

Two backends behind :func:`render`:

- ``"torch"``: gsplat's pure-PyTorch projection (``gsplat.cuda._torch_impl``), then our tile
  accumulation in PyTorch. Runs anywhere; the CPU path.
- ``"gsplat"``: gsplat's CUDA ``fully_fused_projection`` kernel, then the same accumulation on
  the GPU. Needs CUDA.

Accumulation is tile-based as in gsplat: the image is cut into square tiles, each Gaussian is
binned into the tiles its 3.33-sigma box touches, and every (Gaussian, tile) pair evaluates
the tile's pixels; ``index_add`` sums them, and autograd carries gradients back to the 2D
means and conics, and through the projection to the 3D means (pose and shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from twinsim.errors import TwinsimError
from twinsim.recon.camera import Camera

EPS2D_PX2 = 0.3  # gsplat's 2D low-pass (anti-aliasing) variance, added to every projected covariance
DEFAULT_TILE_PX = 8  # small tiles suit the 1-3 px Gaussians of a vertebra at fitting resolutions
BACKENDS = ("auto", "torch", "gsplat")


class RenderError(TwinsimError, ValueError):
    """A rendering request is impossible (unknown backend, no CUDA for gsplat, bad shapes)."""


def vertex_spacing_mm(vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Mean length of the edges at each vertex (V,): sets each Gaussian's size."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    length = np.linalg.norm(vertices_mm[e[:, 0]] - vertices_mm[e[:, 1]], axis=1)
    total = np.bincount(e.ravel(), np.repeat(length, 2), minlength=len(vertices_mm))
    count = np.bincount(e.ravel(), minlength=len(vertices_mm))
    return total / np.maximum(count, 1)


def covariances(vertices_mm: torch.Tensor, sigma_mm: torch.Tensor, faces: torch.Tensor | None = None,
                normal_ratio: float = 1.0) -> torch.Tensor:
    """(V, 3, 3) covariances: ``sigma^2 I``, or ``normal_ratio`` times thinner along the normal."""
    eye = torch.eye(3, dtype=vertices_mm.dtype, device=vertices_mm.device)
    s2 = (sigma_mm**2)[:, None, None]
    if normal_ratio == 1.0 or faces is None:
        return s2 * eye.expand(len(vertices_mm), 3, 3)
    n = surface_elements(vertices_mm, faces)[0]
    nn = n[:, :, None] * n[:, None, :]
    return s2 * (eye - nn) + s2 * normal_ratio**2 * nn


def _project(means: torch.Tensor, covars: torch.Tensor, cam: Camera, backend: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2D means (N, 2), conics (N, 3) and radii (N, 2; 0 = not drawn) for one camera."""
    vm, K = cam.viewmat[None], cam.K[None]
    if backend == "gsplat":
        from gsplat import fully_fused_projection

        radii, means2d, _, conics, _ = fully_fused_projection(
            means, covars, None, None, vm, K, cam.width_px, cam.height_px, eps2d=EPS2D_PX2, packed=False)
    else:
        from gsplat.cuda._torch_impl import _fully_fused_projection

        radii, means2d, _, conics, _ = _fully_fused_projection(
            means, covars, vm, K, cam.width_px, cam.height_px, eps2d=EPS2D_PX2)
    return means2d[0], conics[0], radii[0]


def surface_elements(vertices_mm: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outward unit normals (V, 3) and patch areas (V,) mm^2 (a third of each adjacent face), differentiable."""
    a, b, c = (vertices_mm[faces[:, i]] for i in range(3))
    fn = torch.linalg.cross(b - a, c - a)
    idx = faces.reshape(-1)
    n = torch.zeros_like(vertices_mm).index_add(0, idx, fn.repeat_interleave(3, dim=0))
    area = torch.zeros_like(vertices_mm[:, 0]).index_add(0, idx, fn.norm(dim=1).repeat_interleave(3) / 6.0)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-12), area


def solid_weights(means: torch.Tensor, normals: torch.Tensor, areas_mm2: torch.Tensor, conics: torch.Tensor,
                  cam: Camera, reference_depth_mm: torch.Tensor) -> torch.Tensor:
    """Per-splat weights whose sum of normalized 2D Gaussians is the chord length (mm) of each ray."""
    R = cam.viewmat[:3, :3]
    xc = means @ R.T + cam.viewmat[:3, 3]
    t = xc.norm(dim=1)
    cos_out = ((normals @ R.T) * xc).sum(dim=1) / t  # > 0 where the ray leaves the bone
    pixel_area = cam.K[0, 0] * cam.K[1, 1] * areas_mm2 * t / xc[:, 2] ** 3  # projected patch area, px^2
    det = (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2).clamp_min(1e-12)
    return cos_out * (t - reference_depth_mm) * pixel_area * torch.sqrt(det) / (2.0 * math.pi)


def peak_line_integrals(means: torch.Tensor, covars: torch.Tensor, cam: Camera) -> torch.Tensor:
    """Integral of each unit-density Gaussian along the ray through its centre (mm), (N,)."""
    R = cam.viewmat[:3, :3]
    d = means @ R.T + cam.viewmat[:3, 3]
    d = d / d.norm(dim=1, keepdim=True)
    cov_c = R @ covars @ R.T
    q = (d[:, None, :] @ torch.linalg.solve(cov_c, d[:, :, None]))[:, 0, 0]
    return torch.sqrt(2.0 * math.pi / q)


def accumulate_tiles(means2d: torch.Tensor, conics: torch.Tensor, radii: torch.Tensor, weights: torch.Tensor,
                     width_px: int, height_px: int, tile_px: int = DEFAULT_TILE_PX) -> torch.Tensor:
    """Sum of weighted 2D Gaussians on an (H, W) grid, tile by tile (pixel centres at index + 0.5)."""
    dev, dt = means2d.device, means2d.dtype
    tw, th = -(-width_px // tile_px), -(-height_px // tile_px)
    wp = tw * tile_px
    image = torch.zeros(th * tile_px * wp, dtype=dt, device=dev)
    drawn = torch.nonzero((radii > 0).all(dim=1)).squeeze(1)
    if drawn.numel() == 0:
        return image.reshape(th * tile_px, wp)[:height_px, :width_px]
    with torch.no_grad():
        m = means2d[drawn]
        r = radii[drawn].to(dt)
        x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_px).clamp(0, tw - 1).long()
        x1 = torch.floor((m[:, 0] + r[:, 0]) / tile_px).clamp(0, tw - 1).long()
        y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_px).clamp(0, th - 1).long()
        y1 = torch.floor((m[:, 1] + r[:, 1]) / tile_px).clamp(0, th - 1).long()
        nx, ny = x1 - x0 + 1, y1 - y0 + 1
        count = nx * ny
        pair_g = torch.repeat_interleave(torch.arange(len(drawn), device=dev), count)
        start = torch.cumsum(count, 0) - count
        local = torch.arange(int(count.sum()), device=dev) - start[pair_g]
        tx = x0[pair_g] + local % nx[pair_g]
        ty = y0[pair_g] + local // nx[pair_g]
        oy, ox = torch.meshgrid(torch.arange(tile_px, device=dev), torch.arange(tile_px, device=dev), indexing="ij")
        px = tx[:, None] * tile_px + ox.reshape(1, -1)
        py = ty[:, None] * tile_px + oy.reshape(1, -1)
        flat = (py * wp + px).reshape(-1)
    gid = drawn[pair_g]
    dx = (px.to(dt) + 0.5) - means2d[gid, 0:1]
    dy = (py.to(dt) + 0.5) - means2d[gid, 1:2]
    c = conics[gid]
    power = -0.5 * (c[:, 0:1] * dx * dx + c[:, 2:3] * dy * dy) - c[:, 1:2] * dx * dy
    values = weights[gid, None] * torch.exp(power)
    image = image.index_add(0, flat, values.reshape(-1))
    return image.reshape(th * tile_px, wp)[:height_px, :width_px]


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise RenderError(f"unknown rendering backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise RenderError("the gsplat backend needs the Gaussians on a CUDA device; use backend='torch' on CPU")
    return backend


def render(means_mm: torch.Tensor, covars_mm2: torch.Tensor, cameras: Sequence[Camera], shell_weight: float = 1.0,
           solid_weight: float = 0.0, faces: torch.Tensor | None = None, backend: str = "auto",
           tile_px: int = DEFAULT_TILE_PX) -> list[torch.Tensor]:
    """One image per camera: ``shell_weight`` x shell + ``solid_weight`` x solid (both in mm).

    ``means_mm`` (N, 3) and ``covars_mm2`` (N, 3, 3) are in the cameras' frame; the solid
    image needs the mesh ``faces`` (outward-oriented, closed) over those vertices.
    """
    if means_mm.ndim != 2 or means_mm.shape[1] != 3 or covars_mm2.shape != (len(means_mm), 3, 3):
        raise RenderError(f"need means (N, 3) and covariances (N, 3, 3), got {tuple(means_mm.shape)} and {tuple(covars_mm2.shape)}")
    if solid_weight and faces is None:
        raise RenderError("the solid image needs the mesh faces")
    normals = areas = centre = None
    which = resolve_backend(backend, means_mm.device)
    if solid_weight and faces is not None:
        normals, areas = surface_elements(means_mm, faces)
        centre = means_mm.mean(dim=0)
    out = []
    for cam in cameras:
        cam = cam.to(means_mm.device, means_mm.dtype)
        means2d, conics, radii = _project(means_mm, covars_mm2, cam, which)
        w = (shell_weight * peak_line_integrals(means_mm, covars_mm2, cam) if shell_weight
             else torch.zeros(len(means_mm), dtype=means_mm.dtype, device=means_mm.device))
        if solid_weight and normals is not None and areas is not None and centre is not None:
            ref = (cam.viewmat[:3, :3] @ centre + cam.viewmat[:3, 3]).norm()
            w = w + solid_weight * solid_weights(means_mm, normals, areas, conics, cam, ref)
        out.append(accumulate_tiles(means2d, conics, radii, w, cam.width_px, cam.height_px, tile_px))
    return out
