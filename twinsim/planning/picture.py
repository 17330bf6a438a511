"""What a clinician checks before accepting a plan: the cannulas as metal in both X-rays (seed 000,
Figure 10) and the fitted vertebra with both paths from above, the side and behind."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.planning.cannula import VertebraAxes
from twinsim.planning.planner import VertebraPlan
from twinsim.report import write_figure

STEEL_MU_PER_MM = 0.35  # enough that a 5 mm chord reads as metal (transmission ~0.17) on the display scale
SIDE_COLOURS = {"left": "tab:red", "right": "tab:blue"}


def cylinder_chord_mm(geom: ProjectionGeometry, entry_mm: np.ndarray, target_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """(H, W) length of each pixel's ray (source to pixel centre) inside a capped cylinder."""
    K_inv = np.linalg.inv(geom.K)
    T = geom.T_frame_source_mm
    v, u = np.mgrid[0 : geom.height_px, 0 : geom.width_px] + 0.5
    d = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ K_inv.T @ T[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = T[:3, 3]
    L = float(np.linalg.norm(target_mm - entry_mm))
    a = (target_mm - entry_mm) / L
    w = o - entry_mm
    da, wa = d @ a, w @ a
    dp = d - da[:, None] * a
    wp = w - wa * a
    A = np.einsum("ij,ij->i", dp, dp)
    B = 2 * dp @ wp
    C = wp @ wp - radius_mm**2
    disc = B**2 - 4 * A * C
    ok = (disc > 0) & (A > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    A_safe = np.where(ok, A, 1.0)
    t1, t2 = (-B - sq) / (2 * A_safe), (-B + sq) / (2 * A_safe)
    with np.errstate(divide="ignore", invalid="ignore"):
        c0, c1 = (0 - wa) / da, (L - wa) / da
    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
    chord = np.where(ok, np.clip(np.minimum(t2, hi) - np.maximum(t1, lo), 0, None), 0.0)
    return np.nan_to_num(chord).reshape(geom.height_px, geom.width_px)


def with_cannulas(acq: Acquisition, plan: VertebraPlan) -> np.ndarray:
    """The X-ray (display scale, bright = attenuating) with both cannulas added as steel."""
    return with_steel(acq, [(p.entry_mm, p.target_mm) for p in plan.paths.values()], 0.5 * plan.settings.cannula_diameter_mm)


def with_steel(acq: Acquisition, segments: Sequence[tuple[np.ndarray, np.ndarray]], radius_mm: float) -> np.ndarray:
    """The X-ray (display scale) with steel cylinders from each ``(start, end)``, in the geometry's frame."""
    img = np.clip(acq.image.astype(np.float64), 0, 1)
    chord = sum(cylinder_chord_mm(acq.geometry, a, b, radius_mm) for a, b in segments)
    return 1.0 - (1.0 - img) * np.exp(-STEEL_MU_PER_MM * chord)


def _anatomical(points: np.ndarray, axes: VertebraAxes) -> np.ndarray:
    """(right, anterior, superior) coordinates about the body centroid."""
    B = np.stack([axes.right, axes.anterior, axes.superior])
    return (np.asarray(points) - axes.body_centroid_mm) @ B.T


def _draw_mesh(ax, v2: np.ndarray, depth: np.ndarray, faces: np.ndarray, shade: np.ndarray) -> None:  # noqa: ANN001
    from matplotlib.collections import PolyCollection

    order = np.argsort(depth[faces].mean(1))  # far to near
    cols = np.clip(0.35 + 0.6 * shade[order], 0, 1)
    pc = PolyCollection(v2[faces[order]], facecolors=np.c_[cols, cols, cols * 0.92, np.full(len(cols), 0.55)], edgecolors="none")
    ax.add_collection(pc)


def write_plan_picture(path: str | Path, plan: VertebraPlan, vertices_mm: np.ndarray, faces: np.ndarray,
                       landmarks: dict[str, np.ndarray], acquisitions: Sequence[Acquisition] = (), title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_x = len(acquisitions)
    fig = plt.figure(figsize=(15.6, 10.5 if n_x else 5.6))
    rows = 2 if n_x else 1
    grid = fig.add_gridspec(rows, 6)
    for i, acq in enumerate(acquisitions):
        ax = fig.add_subplot(grid[0, (6 // n_x) * i : (6 // n_x) * (i + 1)])
        ax.imshow(with_cannulas(acq, plan), cmap="gray", vmin=0, vmax=1)
        uv = acq.geometry.project(vertices_mm)
        lo, hi = uv.min(0) - 35, uv.max(0) + 35
        for side, p in plan.paths.items():
            e, t = acq.geometry.project(np.vstack([p.entry_mm, p.target_mm]))
            ax.plot(*e, "o", ms=5, mfc="none", mec=SIDE_COLOURS[side])
            ax.annotate(side[0].upper(), e, xytext=(6, -6), textcoords="offset points", color=SIDE_COLOURS[side], fontsize=10,
                        fontweight="bold")
            if not p.safe:
                ax.plot(*np.c_[e, t], color=SIDE_COLOURS[side], lw=1.2, ls="--")
                ax.annotate("REFUSED", t, xytext=(6, 6), textcoords="offset points", color=SIDE_COLOURS[side], fontsize=8)
        ax.set_xlim(max(lo[0], 0), min(hi[0], acq.geometry.width_px))
        ax.set_ylim(min(hi[1], acq.geometry.height_px), max(lo[1], 0))
        ax.set_title(f"{acq.view.get('name', f'view {i + 1}')}: cannulas as steel", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes = VertebraAxes.from_landmarks(landmarks)
    A = _anatomical(vertices_mm, axes)
    fn = np.cross(A[faces[:, 1]] - A[faces[:, 0]], A[faces[:, 2]] - A[faces[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True) + 1e-12
    # (title, horizontal axis, vertical axis, towards the viewer): from above, the patient's right, behind
    views = [("axial, from above (anterior up)", 0, 1, 2, (1, 1)), ("sagittal, from the right", 1, 2, 0, (1, 1)),
             ("coronal, from behind", 0, 2, 1, (1, 1))]
    for k, (name, h, vv, towards, flip) in enumerate(views):
        ax = fig.add_subplot(grid[rows - 1, 2 * k : 2 * k + 2])
        sign = -1.0 if towards == 1 else 1.0  # behind = looking along +anterior
        v2 = np.c_[flip[0] * A[:, h], flip[1] * A[:, vv]]
        shade = np.abs(fn[:, towards])
        _draw_mesh(ax, v2, sign * A[:, towards], faces, shade)
        for side, p in plan.paths.items():
            e, t = _anatomical(np.vstack([p.entry_mm, p.target_mm]), axes)
            colour = SIDE_COLOURS[side]
            ax.plot([flip[0] * e[h], flip[0] * t[h]], [flip[1] * e[vv], flip[1] * t[vv]], color=colour, lw=4.5,
                    ls="-" if p.safe else (0, (1.5, 1)), solid_capstyle="butt", alpha=0.9, label=f"{side}{'' if p.safe else ' (REFUSED)'}")
            ax.plot(flip[0] * t[h], flip[1] * t[vv], "o", color=colour, ms=4)
        ax.set_aspect("equal")
        ax.autoscale_view()
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:
            ax.legend(loc="lower right", fontsize=8)
    lines = []
    for side, p in plan.paths.items():
        verdict = "safe" if p.safe else "REFUSED: " + "; ".join(p.reasons)
        lines.append(f"{side}: clearance {p.min_clearance_mm:.2f} mm ({p.clearance_region}, {p.nearest_wall}), length {p.length_mm:.0f} mm, "
                     f"medial {p.medial_angle_deg:.0f} deg, tilt {p.tilt_deg:+.0f} deg, tip {p.tip_to_cortex_mm:.1f} mm short of the "
                     f"cortex: {verdict}")
    wrapped = [w for line in lines for w in textwrap.wrap(line, 170, subsequent_indent="    ")]
    fig.suptitle((title + "\n" if title else "") + "\n".join(wrapped), fontsize=9)
    fig.tight_layout()
    write_figure(fig, path, dpi=90)
    return Path(path)
