"""``twinsim bench xray``: DRRs per second, nanodrr (ours) vs diffdrr's Siddon renderer (reference).

Both render the same CT with the same C-arm geometry (AP at the target vertebra) in the same
run; the table reports medians over repeats and their ratio, plus the correlation of the two
images as a check that the geometry really is the same. diffdrr is installed by set-up without
its declared dependencies (torchvision, pyvista, timm...), which its renderer does not use.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinsim import frames
from twinsim.anatomy.ct import CTVolume, load_ct
from twinsim.imaging.carm_geometry import CArmGeometry, PatientAxes, carm_pose
from twinsim.imaging.drr import DEFAULT_SAMPLES_PER_RAY, DRRRenderer
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.report import table, write_json

# diffdrr's camera is ours turned half a turn about the beam: its pixel grid runs the other way.
T_OURS_DIFFDRR = frames.make_transform(frames.rotation_about_axis([0, 0, 1], np.pi))


def bench_geometry(ct: CTVolume, level: str, size_px: int, carm: CArmGeometry | None = None) -> ProjectionGeometry:
    """AP view centred on ``level``, expressed in the ct frame (benchmark set-up only)."""
    carm = carm or CArmGeometry()
    idx = np.argwhere(ct.vertebra_mask(level, require_complete=False)).mean(axis=0)
    iso_mm = frames.transform_points(ct.affine_mm, idx)
    T_ct_carm = carm_pose(iso_mm, PatientAxes.from_T_world_ct(np.eye(4)), 0.0, 0.0)
    T_ct_source = T_ct_carm @ frames.scale_translation(carm.T_carm_source, 1000.0)
    return ProjectionGeometry(carm.sdd_mm, size_px, size_px, carm.pixel_spacing_for((size_px, size_px)), T_ct_source)


class DiffDRRReference:
    """diffdrr's Siddon renderer on the same CT files and geometry."""

    def __init__(self, ct_path: Path, labels_path: Path) -> None:
        from diffdrr.data import read

        # No reorientation and no centring: diffdrr's world is then the NIfTI RAS world, our ct frame.
        self.subject = read(str(ct_path), str(labels_path), orientation=None, center_volume=False)
        self._drr: dict[int, Any] = {}

    def render(self, geom: ProjectionGeometry) -> np.ndarray:
        from diffdrr.drr import DRR
        from diffdrr.pose import RigidTransform

        if geom.height_px not in self._drr:
            self._drr[geom.height_px] = DRR(self.subject, sdd=geom.sdd_mm, height=geom.height_px, width=geom.width_px,
                                            delx=geom.pixel_spacing_mm[0], dely=geom.pixel_spacing_mm[1], renderer="siddon")
        pose = torch.tensor(geom.T_frame_source_mm @ T_OURS_DIFFDRR, dtype=torch.float32)[None]
        with torch.no_grad():
            img = self._drr[geom.height_px](RigidTransform(pose))
        return img[0, 0].numpy()


def _time(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    out = fn()  # warm-up: first-call allocations and caches are not what we measure
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def run_xray_bench(ct_path: Path, labels_path: Path, label_table: Path | None, level: str = "L1",
                   sizes: tuple[int, ...] = (256, 512), repeats: int = 3, reference: bool = True,
                   n_samples: int = DEFAULT_SAMPLES_PER_RAY, progress: bool = True) -> dict[str, Any]:
    ct = load_ct(ct_path, labels_path, label_table)
    ours = DRRRenderer(ct, n_samples=n_samples)
    ref = DiffDRRReference(ct_path, labels_path) if reference else None
    rows: list[dict[str, Any]] = []
    for n in sizes:
        geom = bench_geometry(ct, level, n)
        t_ours, img_ours = _time(lambda g=geom: ours.line_integrals(g), repeats)
        row: dict[str, Any] = {"size_px": n, "nanodrr_cpu_s": t_ours, "nanodrr_cpu_drr_per_s": 1.0 / statistics.median(t_ours)}
        if progress:
            print(f"  nanodrr {n}^2: median {statistics.median(t_ours):.2f} s", flush=True)
        if ref is not None:
            t_ref, img_ref = _time(lambda g=geom: ref.render(g), max(1, repeats - 1))
            row.update({
                "diffdrr_siddon_cpu_s": t_ref,
                "diffdrr_siddon_cpu_drr_per_s": 1.0 / statistics.median(t_ref),
                "speedup_vs_diffdrr": statistics.median(t_ref) / statistics.median(t_ours),
                "image_correlation": float(np.corrcoef(img_ours.ravel(), img_ref.ravel())[0, 1]),
            })
            if progress:
                print(f"  diffdrr siddon {n}^2: median {statistics.median(t_ref):.2f} s", flush=True)
        if torch.cuda.is_available():
            gpu = DRRRenderer(ct, device="cuda", n_samples=n_samples)

            def on_gpu(g: ProjectionGeometry = geom, r: DRRRenderer = gpu) -> np.ndarray:
                out = r.line_integrals(g)
                torch.cuda.synchronize()
                return out

            t_gpu, _ = _time(on_gpu, max(repeats, 5))
            row.update({"nanodrr_cuda_s": t_gpu, "nanodrr_cuda_drr_per_s": 1.0 / statistics.median(t_gpu),
                        "gpu": torch.cuda.get_device_name()})
        rows.append(row)
    return {
        "ct": str(Path(ct_path).name),
        "level": level,
        "geometry": "AP at the level's centroid, SDD 1020 mm, source-isocenter 620 mm, 300 mm detector",
        "samples_per_ray": n_samples,
        "repeats": repeats,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "results": rows,
    }


def format_xray_bench(r: dict[str, Any]) -> str:
    rows = []
    for x in r["results"]:
        med = statistics.median
        rows.append([
            f"{x['size_px']}^2",
            f"{x['nanodrr_cpu_drr_per_s']:.2f} ({med(x['nanodrr_cpu_s']):.2f} s)",
            f"{x['diffdrr_siddon_cpu_drr_per_s']:.3f} ({med(x['diffdrr_siddon_cpu_s']):.2f} s)" if "diffdrr_siddon_cpu_s" in x else "not run",
            f"{x['speedup_vs_diffdrr']:.1f}x" if "speedup_vs_diffdrr" in x else "-",
            f"{x['image_correlation']:.4f}" if "image_correlation" in x else "-",
            f"{x['nanodrr_cuda_drr_per_s']:.1f} ({x['gpu']})" if "nanodrr_cuda_s" in x else "no GPU",
        ])
    return table(["image", "nanodrr CPU DRR/s", "diffdrr Siddon CPU DRR/s", "ratio", "corr", "nanodrr CUDA DRR/s"], rows)


def main(ct: Path, labels: Path, label_table: Path | None, level: str, out: Path, repeats: int, reference: bool) -> int:
    print(f"twinsim bench xray: {ct.name}, AP at {level}, median of {repeats} repeats after a warm-up")
    r = run_xray_bench(ct, labels, label_table, level, repeats=repeats, reference=reference)
    print(format_xray_bench(r))
    print(f"wrote {write_json(out, r)}")
    return 0
