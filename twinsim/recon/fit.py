"""Fit the shape model's pose and shape to two X-rays by differentiable splatting (seed 000, 4.2-4.4).

Parameters: a rotation (axis-angle, about the starting centroid) and translation on top of
the initial pose, and K shape coefficients in standard deviations. The loss is an image
similarity summed over both views in a region of interest around the vertebra, plus a
Mahalanobis prior on the shape. Coarse to fine over an image pyramid, Adam with early
stopping at each level, and restarts from perturbed starts when a run ends poorly: no better
than its start, or off the clicks.
The fitter reads only the images, their geometry and the 2D landmarks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from twinsim import frames
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.landmarks_file import Clicks
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.recon import RECONSTRUCTION_FORMAT
from twinsim.recon.camera import RoiBox, camera_for, crop_image
from twinsim.recon.consistency import checked_initial_pose
from twinsim.recon.initialization import InitializationError, InitialPose
from twinsim.recon.renderer import covariances, render, vertex_spacing_mm
from twinsim.recon.similarity import GradientNCCLoss, ImageLoss, shape_prior
from twinsim.shape.differentiable import DifferentiableInstance, axis_angle_to_matrix
from twinsim.shape.model import ShapeModel

# A vertebra must have at least this share of its projected starting surface inside each image.
MIN_INSIDE_FRACTION = 0.6


@dataclass(frozen=True)
class FitSettings:
    n_modes: int | None = None  # shape modes fitted (None: all of the model's)
    pyramid_mm: tuple[float, ...] = (2.8, 1.4, 0.7)  # pixel size at the vertebra, coarse to fine
    iterations: tuple[int, ...] = (60, 50, 30)  # Adam steps per pyramid level (at most)
    lr_rotation_rad: float = 0.01
    lr_translation_mm: float = 0.4
    lr_shape_sd: float = 0.05
    # On the squared Mahalanobis distance of the shape. 2e-3 let the shape drift with 3 mm clicks
    # (L1 random pairs: DICE 0.756, below the initialization's 0.764); 0.02 gave 0.800 there, same at 1 mm.
    prior_weight: float = 0.02
    roi_margin_mm: float = 12.0  # around the starting vertebra's projection, at the vertebra
    patience: int = 12  # steps without improvement before a level ends
    min_improvement: float = 1e-4
    landmark_weight: float = 0.1  # clicks as soft constraints: weight on their mean squared reprojection error
    click_sigma_mm: float = 1.0  # expected click error at the vertebra (scales that term)
    restarts: int = 2  # extra runs from perturbed starts when a run ends poorly (see reconstruct)
    restart_landmark_rms: float = 3.0  # a run that leaves the clicks by more (RMS, in click_sigma_mm) ended poorly
    restart_rotation_deg: float = 5.0
    restart_translation_mm: float = 4.0
    sigma_per_spacing: float = 0.6  # Gaussian SD as a fraction of the local vertex spacing
    normal_ratio: float = 1.0  # < 1 flattens each Gaussian along the surface normal
    # Solid only: adding the cortical shell (see recon.renderer) at weight 1 lowered DICE on the
    # benchmark's L1 (10 mm high-pass, 1 mm clicks): AP+LAT 0.862 -> 0.848, 8 random pairs 0.845 -> 0.841.
    shell_weight: float = 0.0
    solid_weight: float = 1.0  # the bone's chord length at uniform density
    backend: str = "auto"
    seed: int = 0


@dataclass
class Reconstruction:
    model_name: str
    frame: str
    T_frame_model: np.ndarray  # fitted pose (mm); the shape is model.instance(coeffs_sd)
    coeffs_sd: np.ndarray
    vertices_mm: np.ndarray  # fitted surface in the image frame
    faces: np.ndarray
    initial: InitialPose
    initial_vertices_mm: np.ndarray
    loss: float  # at the finest pyramid level: similarity + shape prior + landmark term
    initial_loss: float = float("nan")  # the same at the initial pose
    landmark_rms_sigma: float = float("nan")  # clicks' RMS reprojection error of the fit, in click SDs
    loss_history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    runs: int = 1
    loss_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def mesh(self) -> SurfaceMesh:
        return SurfaceMesh(self.vertices_mm.copy(), self.faces.copy(), frame=self.frame)

    def initial_mesh(self) -> SurfaceMesh:
        return SurfaceMesh(self.initial_vertices_mm.copy(), self.faces.copy(), frame=self.frame)

    def summary(self) -> dict[str, Any]:
        return {"model": self.model_name, "frame": self.frame, "T_frame_model_mm": self.T_frame_model.tolist(),
                "coeffs_sd": self.coeffs_sd.tolist(), "loss": self.loss, "initial_loss": self.initial_loss,
                "landmark_rms_sigma": self.landmark_rms_sigma, "loss_name": self.loss_name,
                "wall_s": self.wall_s, "runs": self.runs,
                "initialization": {"method": self.initial.method, "landmarks": self.initial.landmarks,
                                   "T_frame_model_mm": self.initial.T_frame_model.tolist(),
                                   "reprojection_px": self.initial.reprojection_px,
                                   "input_check": self.initial.check.summary() if self.initial.check is not None else None},
                "settings": self.settings, "loss_history": self.loss_history}


def roi_box(g: ProjectionGeometry, vertices_mm: np.ndarray, margin_mm: float, view: int) -> RoiBox:
    """Box around the projected vertebra plus a margin, inside the image; refuses a vertebra outside it."""
    uv = g.project(vertices_mm)
    inside = ((uv[:, 0] >= 0) & (uv[:, 0] <= g.width_px) & (uv[:, 1] >= 0) & (uv[:, 1] <= g.height_px)).mean()
    if inside < MIN_INSIDE_FRACTION:
        raise InitializationError(
            f"view {view}: the vertebra lies outside the X-ray ({100 * inside:.0f}% of its starting surface projects "
            f"inside the {g.width_px}x{g.height_px} image); centre the C-arm on it")
    m = margin_mm * g.px_per_mm_at(vertices_mm.mean(0))
    lo, hi = uv.min(0) - m, uv.max(0) + m
    return RoiBox(int(max(0, np.floor(lo[0]))), int(max(0, np.floor(lo[1]))),
                  int(min(g.width_px, np.ceil(hi[0]))), int(min(g.height_px, np.ceil(hi[1]))))


class _Problem:
    """Everything one run of the optimizer needs, built once per reconstruction."""

    def __init__(self, model: ShapeModel, acqs: Sequence[Acquisition], init: InitialPose, s: FitSettings,
                 device: torch.device, clicks: Clicks | None = None) -> None:
        self.s = s
        self.device = device
        dt = torch.float32
        self.instance = DifferentiableInstance(model, s.n_modes, dtype=dt).to(device)
        self.faces = torch.as_tensor(model.faces, dtype=torch.long, device=device)
        self.sigma = torch.as_tensor(s.sigma_per_spacing * vertex_spacing_mm(model.mean_mm, model.faces), dtype=dt, device=device)
        self.R0 = torch.as_tensor(init.T_frame_model[:3, :3], dtype=dt, device=device)
        self.t0 = torch.as_tensor(init.T_frame_model[:3, 3], dtype=dt, device=device)
        v0 = frames.transform_points(init.T_frame_model, model.mean_mm)
        self.centre = torch.as_tensor(v0.mean(0), dtype=dt, device=device)
        boxes = [roi_box(a.geometry, v0, s.roi_margin_mm, i) for i, a in enumerate(acqs)]
        self.levels = []
        for mm in s.pyramid_mm:
            cams, targets = [], []
            for a, box in zip(acqs, boxes, strict=True):
                factor = max(1, int(round(mm * a.geometry.px_per_mm_at(v0.mean(0)))))
                cams.append(camera_for(a.geometry, box, factor).to(device, dt))
                targets.append(torch.as_tensor(crop_image(a.image, box, factor), device=device))
            self.levels.append((mm, cams, targets))
        # The clicks stay in the loss as soft constraints, so the image term cannot walk the pose off them.
        self.landmarks = []
        for view, a in zip(clicks.views if clicks else [], acqs, strict=False):
            names = [n for n in view if n in model.annotations]
            if not names:
                continue
            W = np.zeros((len(names), len(model.mean_mm)))
            for i, n in enumerate(names):
                W[i, model.annotations[n].indices] = model.annotations[n].weights
            self.landmarks.append((torch.as_tensor(W, dtype=dt, device=device),
                                   torch.as_tensor(a.geometry.P, dtype=dt, device=device),
                                   torch.as_tensor(np.array([view[n] for n in names]), dtype=dt, device=device),
                                   1.0 / a.geometry.px_per_mm_at(v0.mean(0))))

    def landmark_loss(self, verts: torch.Tensor) -> torch.Tensor:
        """Mean squared reprojection error of the clicked landmarks, in units of the click noise."""
        terms = []
        for W, P, uv, mm_per_px in self.landmarks:
            h = torch.cat([W @ verts, torch.ones(len(W), 1, dtype=verts.dtype, device=verts.device)], dim=1) @ P.T
            err = (h[:, :2] / h[:, 2:3] - uv) * mm_per_px / self.s.click_sigma_mm
            terms.append((err**2).sum(dim=1))
        return torch.cat(terms).mean() if terms else verts.new_zeros(())

    def vertices(self, rv: torch.Tensor, tr: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(1, 3, dtype=b.dtype, device=b.device)
        shape = self.instance(b[None], zero, zero)[0]
        v = shape @ self.R0.T + self.t0
        return (v - self.centre) @ axis_angle_to_matrix(rv[None])[0].T + self.centre + tr

    def final_level_loss(self, loss_fn: ImageLoss, rv: torch.Tensor, tr: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        """Total loss at the finest pyramid level, and the clicks' RMS reprojection error in click SDs."""
        mm, cams, targets = self.levels[-1]
        with torch.no_grad():
            verts = self.vertices(rv, tr, b)
            lm = self.landmark_loss(verts)
            loss = loss_fn(self.images(verts, cams), targets, mm) + self.s.prior_weight * shape_prior(b) + self.s.landmark_weight * lm
        return float(loss), float(torch.sqrt(lm))

    def images(self, verts: torch.Tensor, cams: Sequence) -> list[torch.Tensor]:
        cov = covariances(verts, self.sigma, self.faces, self.s.normal_ratio)
        return render(verts, cov, cams, shell_weight=self.s.shell_weight, solid_weight=self.s.solid_weight,
                      faces=self.faces, backend=self.s.backend)


def _run(p: _Problem, loss_fn: ImageLoss, start: tuple[np.ndarray, np.ndarray], bar: tqdm | None, run: int
         ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, list[dict[str, float]]]:
    s = p.s
    dt = torch.float32
    rv = torch.tensor(start[0], dtype=dt, device=p.device, requires_grad=True)
    tr = torch.tensor(start[1], dtype=dt, device=p.device, requires_grad=True)
    b = torch.zeros(p.instance.n_modes, dtype=dt, device=p.device, requires_grad=True)
    opt = torch.optim.Adam([{"params": [rv], "lr": s.lr_rotation_rad}, {"params": [tr], "lr": s.lr_translation_mm},
                            {"params": [b], "lr": s.lr_shape_sd}])
    history: list[dict[str, float]] = []
    best = (np.inf, rv.detach().clone(), tr.detach().clone(), b.detach().clone())
    for li, ((mm, cams, targets), n_iter) in enumerate(zip(p.levels, s.iterations, strict=True)):
        best = (np.inf, *best[1:])  # losses are not comparable across resolutions
        stale = 0
        for it in range(n_iter):
            opt.zero_grad()
            verts = p.vertices(rv, tr, b)
            sim = loss_fn(p.images(verts, cams), targets, mm)
            loss = sim + s.prior_weight * shape_prior(b) + s.landmark_weight * p.landmark_loss(verts)
            loss.backward()
            value = float(loss.detach())
            if value < best[0] - s.min_improvement:
                best, stale = (value, rv.detach().clone(), tr.detach().clone(), b.detach().clone()), 0
            else:
                stale += 1
            history.append({"run": run, "level": li, "pixel_mm": mm, "iteration": it, "loss": value, "similarity_loss": float(sim.detach())})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(run=run, level=f"{mm:g}mm", loss=f"{value:.4f}")
            if stale >= s.patience:
                if bar is not None:
                    bar.update(n_iter - it - 1)
                break
            opt.step()
        with torch.no_grad():  # carry the best parameters of this level to the next
            rv.copy_(best[1])
            tr.copy_(best[2])
            b.copy_(best[3])
    return best[0], best[1].cpu().numpy(), best[2].cpu().numpy(), best[3].cpu().numpy(), history


def reconstruct(model: ShapeModel, acquisitions: Sequence[Acquisition], clicks: Clicks, settings: FitSettings | None = None,
                loss: ImageLoss | None = None, progress: bool = False, init: InitialPose | None = None,
                device: str | torch.device = "cpu") -> Reconstruction:
    """Pose and shape of the vertebra from two acquisitions and their 2D landmarks."""
    s = settings or FitSettings()
    loss_fn = loss or GradientNCCLoss()
    if len(s.iterations) != len(s.pyramid_mm):
        raise ValueError("FitSettings: give one iteration count per pyramid level")
    t_start = time.perf_counter()
    geoms = [a.geometry for a in acquisitions]
    if init is None:
        init = checked_initial_pose(model, acquisitions, clicks, s.click_sigma_mm)
    if init.check is not None:
        clicks = init.check.clicks  # as given, or with a left/right swap undone
    dev = torch.device(device)
    prob = _Problem(model, acquisitions, init, s, dev, clicks)
    rng = np.random.default_rng(s.seed)
    bar = tqdm(total=sum(s.iterations), desc="reconstruct", unit="step", disable=not progress, leave=False)
    zero = torch.zeros(3, dtype=torch.float32, device=dev)
    start_loss, _ = prob.final_level_loss(loss_fn, zero, zero, torch.zeros(prob.instance.n_modes, dtype=torch.float32, device=dev))
    best = None
    best_rms = np.inf
    history: list[dict[str, float]] = []
    runs = 0
    try:
        for run in range(1 + s.restarts):
            if run == 0:
                start = (np.zeros(3), np.zeros(3))
            else:
                bar.total += sum(s.iterations)
                bar.refresh()
                axis = rng.normal(size=3)
                start = (axis / np.linalg.norm(axis) * np.deg2rad(s.restart_rotation_deg) * rng.uniform(0.5, 1.0),
                         rng.normal(size=3) * s.restart_translation_mm / np.sqrt(3))
            result = _run(prob, loss_fn, start, bar, run)
            runs += 1
            history += result[4]
            if best is None or result[0] < best[0]:
                best = result
                best_rms = prob.final_level_loss(loss_fn, *(torch.as_tensor(x, device=dev) for x in result[1:4]))[1]
            # Poor: the fit did not improve on its start, or it walked off the clinician's clicks.
            if best[0] < start_loss - s.min_improvement and best_rms <= s.restart_landmark_rms:
                break
    finally:
        bar.close()
    assert best is not None
    value, rv, tr, b = best[:4]
    with torch.no_grad():
        verts = prob.vertices(torch.tensor(rv), torch.tensor(tr), torch.tensor(b)).cpu().numpy().astype(np.float64)
    R = frames.make_transform(axis_angle_to_matrix(torch.tensor(rv, dtype=torch.float64)[None])[0].numpy())
    c = prob.centre.cpu().numpy().astype(np.float64)
    T_fit = frames.make_transform(t=c + tr) @ R @ frames.make_transform(t=-c) @ init.T_frame_model
    coeffs = np.zeros(model.n_modes)
    coeffs[: len(b)] = b
    return Reconstruction(
        model_name=model.name, frame=geoms[0].frame, T_frame_model=T_fit, coeffs_sd=coeffs, vertices_mm=verts,
        faces=model.faces.copy(), initial=init, initial_vertices_mm=frames.transform_points(init.T_frame_model, model.mean_mm),
        loss=float(value), initial_loss=start_loss, landmark_rms_sigma=best_rms, loss_history=history, wall_s=time.perf_counter() - t_start, runs=runs,
        loss_name=getattr(loss_fn, "name", type(loss_fn).__name__),
        settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()})


def save_reconstruction(path: str | Path, r: Reconstruction, level: str, image_paths: Sequence[str | Path]) -> Path:
    """The reconstruction file that ``twinsim plan`` reads (pose, shape coefficients, the images it came from)."""
    from twinsim.report import write_json

    return write_json(path, {"format": RECONSTRUCTION_FORMAT, "level": level, "images": [Path(p).name for p in image_paths],
                             "image_paths": [str(p) for p in image_paths], **r.summary()})


def default_model_name(level: str) -> str:
    """The committed shape model for a level (``twinsim.shape.regions``: L1's own, else its region's)."""
    from twinsim.shape.regions import model_for_level

    return model_for_level(level)
