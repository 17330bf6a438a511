"""One page a surgeon reads after a rehearsal: the X-rays with the plan, the twin in 3D with both guides,
each step's outcome, and the placement recommendation."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pybullet as pb

from twinsim import frames
from twinsim.planning.picture import SIDE_COLOURS, with_cannulas
from twinsim.report import write_figure

if TYPE_CHECKING:
    from twinsim.procedure.rehearsal import RehearsalRecord
    from twinsim.procedure.steps import StepRecord

STATE_MARK = {"done": "ok", "failed": "FAILED", "running": "...", "pending": ""}


def twin_view(record: RehearsalRecord, size_px: tuple[int, int] = (640, 480)) -> np.ndarray | None:
    """The twin's collision world rendered from above the patient's right, the robot at its last docked
    configuration and both planned needle lines drawn as thin rods (PyBullet's software renderer)."""
    world = record.world
    if world is None or record.registration is None or record.registration.plan is None:
        return None
    c = world.client
    rods = []
    for side, p in record.registration.plan.paths.items():
        dock = record.docks.get(side)
        start = dock.T_dock_mm[:3, 3] if dock is not None else p.entry_mm - p.axis * 60.0
        length = float(np.linalg.norm(p.target_mm - start))
        mid = (start + p.target_mm) / 2 * 1e-3
        R = frames.rotation_between(np.array([0.0, 0.0, 1.0]), p.axis)
        rgba = (0.85, 0.15, 0.15, 1) if side == "left" else (0.15, 0.3, 0.9, 1)
        vis = pb.createVisualShape(pb.GEOM_CYLINDER, radius=0.0025, length=length * 1e-3, rgbaColor=rgba, physicsClientId=c)
        rods.append(pb.createMultiBody(0, -1, vis, mid.tolist(), frames.matrix_to_quat_xyzw(R).tolist(), physicsClientId=c))
    placed = list(record.placed.values())
    if placed:
        world.set_joints(placed[-1].dock.q_dock_rad)
    elif record.docks:
        world.set_joints(next(iter(record.docks.values())).q_dock_rad)
    target = record.registration.plan.paths["left"].target_mm * 1e-3
    up = world.table.up if world.table is not None else np.array([0.0, 0.0, 1.0])
    base = world.T_ref_base_m[:3, 3]
    across = base - target
    across = across - (across @ up) * up
    eye = target + across / np.linalg.norm(across) * 1.3 + up * 1.0
    view = pb.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist(), physicsClientId=c)
    proj = pb.computeProjectionMatrixFOV(45, size_px[0] / size_px[1], 0.05, 6.0, physicsClientId=c)
    img = pb.getCameraImage(size_px[0], size_px[1], view, proj, renderer=pb.ER_TINY_RENDERER, physicsClientId=c)[2]
    for r in rods:
        pb.removeBody(r, physicsClientId=c)
    return np.asarray(img, dtype=np.uint8).reshape(size_px[1], size_px[0], 4)[:, :, :3]


def write_report_page(record: RehearsalRecord, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    log, reg = record.log, record.registration
    fig = plt.figure(figsize=(16, 10))
    gs = fig.add_gridspec(2, 3, height_ratios=[1.15, 1.0])
    acqs = reg.acquisitions if reg is not None else []
    plan = reg.plan if reg is not None else None
    for k in range(2):
        ax = fig.add_subplot(gs[0, k])
        ax.axis("off")
        if k >= len(acqs):
            ax.set_title("(no X-ray)")
            continue
        a = acqs[k]
        img = with_cannulas(a, plan) if plan is not None else a.image
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if plan is not None:
            for side, p in plan.paths.items():
                uv = a.geometry.project(np.array([p.entry_mm, p.target_mm]))
                ax.plot(uv[:, 0], uv[:, 1], "-", color=SIDE_COLOURS[side], lw=1, alpha=0.7, label=f"{side} path")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"X-ray {a.view.get('name', k) if isinstance(a.view, dict) else k} with the plan")
    ax3 = fig.add_subplot(gs[0, 2])
    ax3.axis("off")
    img3 = twin_view(record)
    if img3 is not None:
        ax3.imshow(img3)
    ax3.set_title("the twin: collision world, guide docked, both needle lines")
    ax = fig.add_subplot(gs[1, :2])
    ax.axis("off")
    lines = []
    for i, s in enumerate(log.steps):
        extra = step_figures(s)
        lines.append(f"{i + 1:>2}. {s.title:<70} {STATE_MARK.get(s.state, s.state):<7} {s.seconds:6.1f} s  {extra}")
        if s.error:
            lines += ["      " + w for w in textwrap.wrap(s.error, 120)[:3]]
    ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8, va="top")
    ax.set_title("steps", loc="left")  # the outcome heads the page
    ax = fig.add_subplot(gs[1, 2])
    ax.axis("off")
    text = [f"rig: {log.meta.get('rig')}  level: {log.meta.get('level')}  views: {', '.join(log.meta.get('views', []))}"]
    m = log.meta.get("motions", {})
    text.append(f"motions sent {m.get('sent', 0)}, refused {m.get('refused', 0)}, sent unchecked {m.get('sent_without_passed_check', 0)}")
    if log.recommendation:
        text.append("")
        text += textwrap.wrap("placement: " + str(log.recommendation.get("advice", "")), 48)
    ax.text(0.0, 1.0, "\n".join(text), fontsize=10, va="top")
    ax.set_title("recommendation", loc="left")
    fig.suptitle("\n".join(textwrap.wrap(f"twinsim rehearsal: {log.summary}", 110)), fontsize=14)
    fig.tight_layout()
    return write_figure(fig, path)


def step_figures(step: StepRecord) -> str:
    f = step.figures
    if "truth" in f:
        t = f["truth"]
        return (f"tip {t['tip_error_mm']:.2f} mm, axis {t['axis_error_deg']:.2f} deg, "
                f"{'BREACH' if t['breach'] else 'no breach'} (true bone)")
    if "tracked_tip_error_mm" in f:
        return f"tracked tip {f['tracked_tip_error_mm']:.2f} mm, axis {f['tracked_axis_error_deg']:.2f} deg"
    if "guide_tip_tracked_vs_joints_mm" in f:
        return f"{f['source']}; guide seen {f['guide_tip_tracked_vs_joints_mm']:.2f} mm from the joints' prediction"
    if "input_check" in f:
        again = f" (marked again after: {f['marked_again_after'][0][:60]}...)" if f.get("marked_again_after") else ""
        return f"{f['in_both']} landmarks in both views; {f['input_check']}{again}"
    if "paths" in f:
        return ", ".join(f"{s}: clearance {p['min_clearance_mm']:.1f} mm" for s, p in f["paths"].items())
    return ""
