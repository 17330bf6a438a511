"""Picture of a reconstruction: the fitted outline on both X-rays, initial vs final."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.contact_sheet import mask_outlines_px
from twinsim.report import write_figure


def silhouette(vertices_mm: np.ndarray, faces: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Boolean (H, W) mask of the projected surface."""
    g = acq.geometry
    uv = g.project(vertices_mm) - 0.5  # pixel centres at index + 0.5
    mask = np.zeros((g.height_px, g.width_px), dtype=bool)
    for tri in faces:
        rr, cc = polygon(uv[tri, 1], uv[tri, 0], shape=mask.shape)
        mask[rr, cc] = True
    return mask


def write_overlay(path: str | Path, acquisitions: Sequence[Acquisition], initial_mm: np.ndarray, final_mm: np.ndarray,
                  faces: np.ndarray, title: str = "", truth_mm: np.ndarray | None = None) -> Path:
    """One panel per view: initial outline (yellow, dashed), final (red), optional ground truth (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(acquisitions), figsize=(6 * len(acquisitions), 6.4), squeeze=False)
    for ax, acq in zip(axes[0], acquisitions, strict=True):
        ax.imshow(acq.image, cmap="gray", vmin=0, vmax=1)
        layers = [(initial_mm, "gold", "--", "initial"), (final_mm, "red", "-", "final")]
        if truth_mm is not None:
            layers.insert(0, (truth_mm, "cyan", ":", "ground truth"))
        for verts, colour, style, label in layers:
            for k, c in enumerate(mask_outlines_px(silhouette(verts, faces, acq))):
                ax.plot(c[:, 0], c[:, 1], color=colour, ls=style, lw=1.2, label=label if k == 0 else None)
        uv = acq.geometry.project(np.vstack([initial_mm, final_mm]))
        lo, hi = uv.min(0) - 40, uv.max(0) + 40
        ax.set_xlim(max(lo[0], 0), min(hi[0], acq.geometry.width_px))
        ax.set_ylim(min(hi[1], acq.geometry.height_px), max(lo[1], 0))
        ax.set_title(str(acq.view.get("name", "")) or "view")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_figure(fig, path, dpi=90)
    return Path(path)
