"""``twinsim bench mapping``: seed 004's Tables 2 and 3 in the simulated room.

Ten needle-guide tip targets are set in the twin (above the patient's back, aimed at the
target vertebra). Virtual-to-real: each is sent through the calibration chain to the
operation robot, open loop (one move) and closed loop (tracker feedback), and the real tip
is compared with the target. Real-to-virtual: at each reached pose the twin's estimate of
the tip (tracker + calibration; and, for comparison, joint readings + nominal kinematics)
is compared with the real tip. Errors are in the patient reference frame, mm. Ground truth
is read here, in evaluation code only.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from twinsim import frames
from twinsim.anatomy.patient import Patient
from twinsim.report import table, write_figure, write_json
from twinsim.robot import panda
from twinsim.robot.nominal import NominalPanda
from twinsim.sim.calibration_session import SessionSettings, run_calibration
from twinsim.sim.hand_held import tool
from twinsim.sim.markers_in_room import room_tracker
from twinsim.sim.robot_driver import SimulatedArm
from twinsim.sim.world import OperatingRoom, build_operating_room
from twinsim.twin.calibration_set import CalibrationSet
from twinsim.twin.sync import TwinSync

# Seed 004, Tables 2 and 3: per-point errors (mm) of its ten points.
SEED004_REAL_TO_VIRTUAL_MM = [2.074, 0.796, 1.967, 2.660, 1.799, 1.556, 1.653, 0.638, 2.383, 1.707]
SEED004_VIRTUAL_TO_REAL_MM = [5.951, 6.677, 6.728, 6.955, 7.119, 7.203, 6.518, 6.018, 9.143, 8.202]


def target_poses_ref(cal: CalibrationSet, target_ct_mm: np.ndarray, skin_scene: Any, n: int,
                     current_T_ref_tool: np.ndarray, seed: int) -> list[np.ndarray]:
    """``n`` needle-guide poses set in the twin, as for a transpedicular approach from the robot's side.

    The guide's axis aims at the target's centroid from 10-35 degrees off the posterior
    direction, tilted towards the robot (azimuth within +/-25 degrees), with the tip 25-60 mm
    outside the skin. Uses only planning data (CT, its skin) and the calibration.
    """
    import open3d as o3d

    rng = np.random.default_rng(seed)
    T_ct_ref = frames.invert(cal.T_ref_ct)
    c = frames.transform_points(cal.T_ref_ct, target_ct_mm)
    up = cal.T_ref_ct[:3, :3] @ np.array([0.0, -1.0, 0.0])  # posterior (RAS -y)
    side = cal.T_ref_base[:3, 3] - c
    side -= (side @ up) * up
    side /= np.linalg.norm(side)
    out = []
    while len(out) < n:
        tilt, azimuth = np.deg2rad(rng.uniform(10, 35)), np.deg2rad(rng.uniform(-25, 25))
        h = frames.rotation_about_axis(up, azimuth) @ side
        d = np.cos(tilt) * up + np.sin(tilt) * h  # from the target out through the skin
        start_ct = frames.transform_points(T_ct_ref, c + 400.0 * d)
        dir_ct = T_ct_ref[:3, :3] @ -d
        ray = o3d.core.Tensor([[*start_ct, *dir_ct]], dtype=o3d.core.Dtype.Float32)
        t_hit = float(skin_scene.cast_rays(ray)["t_hit"].numpy()[0])
        if not np.isfinite(t_hit):
            continue
        tip = c + (400.0 - t_hit + rng.uniform(25, 60)) * d
        z = -d
        x = current_T_ref_tool[:3, 0] - (current_T_ref_tool[:3, 0] @ z) * z  # keep the wrist's spin
        x /= np.linalg.norm(x)
        out.append(frames.make_transform(np.column_stack([x, np.cross(z, x), z]), tip))
    return out


class _Truth:
    """Ground truth of the room (evaluation only)."""

    def __init__(self, room: OperatingRoom, vega: Any) -> None:
        self.room, self.ref = room, tool(vega, "patient_reference")

    def _T_ref_world_mm(self) -> np.ndarray:
        return frames.invert(frames.scale_translation(self.ref.T_world_tool_m(), 1000.0))

    def tip_ref_mm(self) -> np.ndarray:
        tip_world = frames.scale_translation(self.room.link_pose("operation", panda.TOOL_TIP_LINK), 1000.0)[:3, 3]
        return frames.transform_points(self._T_ref_world_mm(), tip_world)

    def T_ref_ct(self) -> np.ndarray:
        return self._T_ref_world_mm() @ frames.scale_translation(self.room.T_world_ct, 1000.0)

    def T_ref_base(self) -> np.ndarray:
        return self._T_ref_world_mm() @ frames.scale_translation(self.room.base_pose("operation"), 1000.0)


def run_mapping_bench(scene: str | Path | None = None, n_points: int = 10, seed: int = 0, tol_mm: float = 0.25,
                      max_iterations: int = 6, calibration: CalibrationSet | None = None,
                      progress: bool | None = None, patient: Patient | None = None) -> dict[str, Any]:
    room = build_operating_room(scene, progress=progress, patient=patient)
    model = NominalPanda(room.config.needle_guide)
    try:
        vega = room_tracker(room, {"seed": seed})
        arm = SimulatedArm(room)
        truth = _Truth(room, vega)
        t0 = time.perf_counter()
        cal = calibration or run_calibration(room, vega, arm, model, SessionSettings(seed=seed), progress=progress)
        t_cal = time.perf_counter() - t0
        twin = TwinSync(vega, arm, model, cal)
        level = room.config.patient.target_level
        target_ct = room.patient.vertebra(level).centroid_mm
        home_q = arm.read_joints_rad()
        targets = target_poses_ref(cal, target_ct, room.patient.skin.raycasting_scene(), n_points,
                                   twin.tool_pose_from_joints(), seed)
        rows = []
        for T in tqdm(targets, desc="mapping points", unit="point", disable=None if progress is None else not progress):
            arm.move_joints(home_q)
            twin.move_tool(T, closed_loop=False)
            real_open = truth.tip_ref_mm()
            state = twin.update()
            t1 = time.perf_counter()
            closed = twin.move_tool(T, closed_loop=True, tol_mm=tol_mm, max_iterations=max_iterations)
            t_closed = time.perf_counter() - t1
            real_closed = truth.tip_ref_mm()
            rows.append({
                "target_ref_mm": T[:3, 3].tolist(),
                "real_open_ref_mm": real_open.tolist(),
                "real_closed_ref_mm": real_closed.tolist(),
                "virtual_ref_mm": state.needle_tip_ref_mm.tolist(),
                "virtual_from_joints_ref_mm": state.needle_tip_from_joints_ref_mm.tolist(),
                "real_to_virtual_mm": float(np.linalg.norm(state.needle_tip_ref_mm - real_open)),
                "real_to_virtual_joints_mm": float(np.linalg.norm(state.needle_tip_from_joints_ref_mm - real_open)),
                "virtual_to_real_open_mm": float(np.linalg.norm(real_open - T[:3, 3])),
                "virtual_to_real_closed_mm": float(np.linalg.norm(real_closed - T[:3, 3])),
                "closed_loop_iterations": closed.iterations,
                "closed_loop_converged": closed.converged,
                "closed_loop_s": t_closed,
            })
        arm.move_joints(home_q)
        T_true = truth.T_ref_ct()
        reg_tre = float(np.linalg.norm(frames.transform_points(T_true, target_ct) - frames.transform_points(cal.T_ref_ct, target_ct)))
        base_err = float(np.linalg.norm(truth.T_ref_base()[:3, 3] - cal.T_ref_base[:3, 3]))
    finally:
        model.close()
        room.close()

    def summary(key: str) -> dict[str, float]:
        v = [r[key] for r in rows]
        return {"mean": float(np.mean(v)), "median": float(statistics.median(v)), "max": float(np.max(v)), "all": v}

    return {
        "scene": str(room.config.path.name),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seed": seed,
        "frame": "patient reference marker (ref), mm",
        "kinematic_errors": vars(room.robots["operation"].config.kinematic_errors),
        "closed_loop": {"tolerance_mm": tol_mm, "max_iterations": max_iterations},
        "calibration_s": t_cal,
        "calibration_residuals": cal.residuals,
        "ground_truth_checks": {"registration_tre_at_target_mm": reg_tre, "T_ref_base_position_error_mm": base_err},
        "points": rows,
        "real_to_virtual_mm": summary("real_to_virtual_mm"),
        "real_to_virtual_joints_mm": summary("real_to_virtual_joints_mm"),
        "virtual_to_real_open_mm": summary("virtual_to_real_open_mm"),
        "virtual_to_real_closed_mm": summary("virtual_to_real_closed_mm"),
        "closed_loop_iterations": summary("closed_loop_iterations"),
        "reference_seed004": {"real_to_virtual_mm": {"mean": 1.723, "all": SEED004_REAL_TO_VIRTUAL_MM},
                              "virtual_to_real_mm": {"mean": 7.052, "all": SEED004_VIRTUAL_TO_REAL_MM}},
        "targets_mm": {"real_to_virtual_mean": 0.5, "virtual_to_real_closed_mean": 1.0},
    }


def format_mapping_bench(r: dict[str, Any]) -> str:
    pts = r["points"]
    per_point = table(
        ["point", "real->virtual (tracker)", "real->virtual (joints)", "virtual->real open", "virtual->real closed", "iterations"],
        [[i + 1, f"{p['real_to_virtual_mm']:.3f}", f"{p['real_to_virtual_joints_mm']:.3f}", f"{p['virtual_to_real_open_mm']:.3f}",
          f"{p['virtual_to_real_closed_mm']:.3f}", p["closed_loop_iterations"]] for i, p in enumerate(pts)])
    s = r["reference_seed004"]
    summary = table(
        ["mapping, mean over 10 points (mm)", "ours", "seed 004", "target"],
        [["real-to-virtual (tracker + calibration)", f"{r['real_to_virtual_mm']['mean']:.3f}", f"{s['real_to_virtual_mm']['mean']:.3f}", "<= 0.5"],
         ["real-to-virtual (joint readings, nominal kinematics)", f"{r['real_to_virtual_joints_mm']['mean']:.3f}", "", ""],
         ["virtual-to-real, open loop", f"{r['virtual_to_real_open_mm']['mean']:.3f}", f"{s['virtual_to_real_mm']['mean']:.3f}", ""],
         ["virtual-to-real, closed loop", f"{r['virtual_to_real_closed_mm']['mean']:.3f}", "", "<= 1.0"]])
    g = r["ground_truth_checks"]
    extra = (f"registration error at the target's centroid {g['registration_tre_at_target_mm']:.3f} mm; "
             f"robot base position error {g['T_ref_base_position_error_mm']:.2f} mm; calibration took {r['calibration_s']:.1f} s")
    return per_point + "\n\n" + summary + "\n" + extra


def plot_mapping(r: dict[str, Any], path: Path) -> Path:
    """Seed 004's Figures 6 and 10: virtual (red circles) vs real (blue dots), 3D and two projections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = r["points"]
    fig = plt.figure(figsize=(13, 8.5))
    panels = [
        ("real-to-virtual", np.array([p["virtual_ref_mm"] for p in pts]), np.array([p["real_open_ref_mm"] for p in pts]), None),
        ("virtual-to-real", np.array([p["target_ref_mm"] for p in pts]), np.array([p["real_closed_ref_mm"] for p in pts]),
         np.array([p["real_open_ref_mm"] for p in pts])),
    ]
    for row, (title, virtual, real, open_loop) in enumerate(panels):
        ax = fig.add_subplot(2, 3, 3 * row + 1, projection="3d")
        ax.scatter(*virtual.T, facecolors="none", edgecolors="red", s=60, label="virtual")
        ax.scatter(*real.T, c="blue", s=10, label="real" + (" (closed loop)" if open_loop is not None else ""))
        if open_loop is not None:
            ax.scatter(*open_loop.T, c="orange", marker="x", s=25, label="real (open loop)")
        ax.set_title(f"{title}: tool tips in ref (mm)")
        ax.legend(fontsize=7)
        for k, (i, j, name) in enumerate(((0, 1, "X-Y"), (0, 2, "X-Z"))):
            a = fig.add_subplot(2, 3, 3 * row + 2 + k)
            a.scatter(virtual[:, i], virtual[:, j], facecolors="none", edgecolors="red", s=80)
            a.scatter(real[:, i], real[:, j], c="blue", s=12)
            if open_loop is not None:
                a.scatter(open_loop[:, i], open_loop[:, j], c="orange", marker="x", s=25)
            for n, p in enumerate(virtual):
                a.annotate(str(n + 1), p[[i, j]], fontsize=7, xytext=(4, 4), textcoords="offset points")
            a.set_xlabel("xyz"[i] + " (mm)")
            a.set_ylabel("xyz"[j] + " (mm)")
            a.set_title(f"{name} plane")
            a.set_aspect("equal", adjustable="datalim")
    fig.suptitle(f"twinsim mapping: real-to-virtual {r['real_to_virtual_mm']['mean']:.2f} mm mean; virtual-to-real "
                 f"open {r['virtual_to_real_open_mm']['mean']:.2f} mm, closed loop {r['virtual_to_real_closed_mm']['mean']:.2f} mm "
                 f"(seed 004: 1.723 / 7.052 mm)")
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
    return path


def main(scene: str | None, out: Path, seed: int, calibration: Path | None = None) -> int:
    from twinsim.twin.calibration_set import load_calibration

    cal = load_calibration(calibration) if calibration else None
    print("twinsim bench mapping: calibration chain, then 10 tool-tip points, open and closed loop")
    r = run_mapping_bench(scene, seed=seed, calibration=cal, progress=None)
    print(format_mapping_bench(r))
    print(f"wrote {write_json(out, r)}")
    print(f"wrote {plot_mapping(r, out.with_suffix('.png'))}")
    return 0
