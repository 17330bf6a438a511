"""``twinsim bench mapping``: seed 004's Tables 2 and 3 in the simulated room, the needle axis, and the TRE at the vertebra.

The room runs behind the HAL (timed arm, tracker on a shared clock, C-arm, simulated people)
with the scene's error budget, or only the terms asked for; everything is calibrated through
the workflows first. Ten needle-guide poses are set in the twin (above the patient's back,
aimed at the target vertebra). Virtual-to-real: each is sent through the calibration chain to
the operation robot, open loop (one move) and closed loop (tracker feedback on tip and axis),
and the real guide is compared with the target. Real-to-virtual: at each reached pose the
twin's estimate of the tip and axis (tracker + calibration; and, for comparison, joint
readings + nominal kinematics) is compared with the real guide, also from single frames while
the arm moves. Then two tracked X-rays and the reconstruction give the target registration
error at the vertebra through the whole chain, without the CT. Errors are in the patient
reference frame, mm. Ground truth is read here, in evaluation code only.
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
from twinsim.bench.runner import CaseResult, RunnerSettings, run_cases
from twinsim.bench.tracked_room import TrackedRoom, open_tracked_room
from twinsim.evaluation.recon_metrics import score_in_ct
from twinsim.evaluation.simulated_clicks import DEFAULT_CLICK_SIGMA_MM, simulate_clicks, true_landmarks_mm
from twinsim.hal.errors import HalError, ToolMissing
from twinsim.hal.interfaces import CArmView
from twinsim.recon.fit import FitSettings, default_model_name, reconstruct
from twinsim.report import num, table, write_figure, write_json
from twinsim.robot.kinematics import IKError
from twinsim.shape.model import load_model
from twinsim.sim.scene_config import BUDGET_TERMS
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


DEFAULT_XRAY_VIEWS = (CArmView("AP", 0.0, 0.0), CArmView("RAO 60", -60.0, 0.0))


def _xray_chain(tr: TrackedRoom, level: str, views: tuple[CArmView, CArmView], seed: int) -> dict[str, Any]:
    """Target registration error at the vertebra through tracker, C-arm, X-rays and reconstruction (no CT).

    The simulated clinician clicks where the landmarks truly appear in each image; the fit sees
    only the images, the clicks and the tracked geometry in ``ref``. The truth of each
    landmark is the same model fitted to the true surface (the model's own floor is in it).
    """
    truth_mesh = tr.room.patient.vertebra(level)
    model = load_model(default_model_name(level))
    landmarks_ct = true_landmarks_mm(model, truth_mesh)
    acqs, true_geoms = tr.xray_pair(views)
    tr.room.set_carm_angles(tr.room.config.carm.lao_deg, tr.room.config.carm.cranial_deg)
    clicks = simulate_clicks(true_geoms, landmarks_ct, DEFAULT_CLICK_SIGMA_MM, seed=seed)
    t0 = time.perf_counter()
    r = reconstruct(model, acqs, clicks, FitSettings(click_sigma_mm=DEFAULT_CLICK_SIGMA_MM))
    recon_s = time.perf_counter() - t0
    ct = tr.ct_volume()
    score = score_in_ct(model.annotation_points, r.vertices_mm, r.faces, frames.invert(tr.T_ref_ct_true()), truth_mesh,
                        ct.vertebra_mask(level, require_complete=False), ct.affine_mm, landmarks_ct)
    return {"views": [v.name for v in views], "tre_mm": score["tre_mm"], "tre_mean_mm": score["tre_mean_mm"],
            "dice": score["dice"], "reconstruction_s": recon_s, "initialization": r.initial.method}


def _move_sampled(tr: TrackedRoom, twin: TwinSync, T: np.ndarray) -> list[float]:
    """Open loop to ``T``; while the arm moves, the twin's tip from each single fresh frame against the real tip."""
    tr.arm.move_joints(twin.joint_target(T), asynchronous=True)
    lag = []
    while tr.arm.is_moving():
        f = tr.tracker.get_frame()  # 1/60 s of simulated time: the arm moves on meanwhile
        try:
            tip = twin.needle_tip_ref_mm([f])
        except ToolMissing:
            continue
        lag.append(float(np.linalg.norm(tip - tr.tool_ref_true()[0])))
    tr.arm.wait()
    return lag


def run_mapping_bench(scene: str | Path | None = None, n_points: int = 10, seed: int = 0, tol_mm: float = 0.25,
                      max_iterations: int = 6, calibration: CalibrationSet | None = None,
                      progress: bool | None = None, patient: Patient | None = None, terms: list[str] | None = None,
                      xray_views: tuple[CArmView, CArmView] | None = DEFAULT_XRAY_VIEWS, tol_deg: float = 0.25) -> dict[str, Any]:
    """Seed 004's tables, the needle axis, and the target registration error at the vertebra, budget ``terms`` on."""
    tr = open_tracked_room(scene, terms, seed=seed, calibration=calibration, patient=patient, progress=progress,
                           calibrate_carm=xray_views is not None)
    room, cal = tr.room, tr.calibration
    try:
        twin = TwinSync(tr.tracker, tr.arm, tr.model, cal)
        level = room.config.patient.target_level
        target_ct = room.patient.vertebra(level).centroid_mm
        home_q = tr.arm.read_joints_rad()
        targets = target_poses_ref(cal, target_ct, room.patient.skin.raycasting_scene(), n_points,
                                   twin.tool_pose_from_joints(), seed)
        rows = []
        room.park_carm(True)  # rolled out while the robot positions: paths around it are the procedure's job
        for T in tqdm(targets, desc="mapping points", unit="point", disable=None if progress is None else not progress):
            try:
                tr.arm.move_joints(home_q)
                lag = _move_sampled(tr, twin, T)
                real_open, real_open_axis = tr.tool_ref_true()
                state = twin.update()
                t1 = time.perf_counter()
                closed = twin.move_tool(T, closed_loop=True, tol_mm=tol_mm, tol_deg=tol_deg, max_iterations=max_iterations)
                t_closed = time.perf_counter() - t1
            except (HalError, IKError) as exc:  # a reflex or an unreachable pose: the row says so, the bench goes on
                rows.append({"target_ref_mm": T[:3, 3].tolist(), "error": str(exc)})
                tr.arm.recover()
                continue
            real_closed, real_closed_axis = tr.tool_ref_true()
            axis = T[:3, 2]
            rows.append({
                "target_ref_mm": T[:3, 3].tolist(), "target_axis_ref": axis.tolist(),
                "real_open_ref_mm": real_open.tolist(), "real_closed_ref_mm": real_closed.tolist(),
                "virtual_ref_mm": state.needle_tip_ref_mm.tolist(),
                "virtual_from_joints_ref_mm": state.needle_tip_from_joints_ref_mm.tolist(),
                "real_to_virtual_mm": float(np.linalg.norm(state.needle_tip_ref_mm - real_open)),
                "real_to_virtual_axis_deg": frames.angle_between_deg(state.needle_axis_ref, real_open_axis),
                "real_to_virtual_joints_mm": float(np.linalg.norm(state.needle_tip_from_joints_ref_mm - real_open)),
                "real_to_virtual_moving_mm": float(np.mean(lag)) if lag else None,
                "real_to_virtual_moving_max_mm": float(np.max(lag)) if lag else None,
                "virtual_to_real_open_mm": float(np.linalg.norm(real_open - T[:3, 3])),
                "virtual_to_real_open_axis_deg": frames.angle_between_deg(real_open_axis, axis),
                "virtual_to_real_closed_mm": float(np.linalg.norm(real_closed - T[:3, 3])),
                "virtual_to_real_closed_axis_deg": frames.angle_between_deg(real_closed_axis, axis),
                "closed_loop_iterations": closed.iterations,
                "closed_loop_converged": closed.converged,
                "closed_loop_s": t_closed,
            })
        tr.arm.move_joints(home_q)
        room.park_carm(False)
        T_true = tr.T_ref_ct_true()
        reg_tre = float(np.linalg.norm(frames.transform_points(T_true, target_ct) - frames.transform_points(cal.T_ref_ct, target_ct)))
        base_err = float(np.linalg.norm(tr.T_ref_base_true()[:3, 3] - cal.T_ref_base[:3, 3]))
        chain = _xray_chain(tr, level, xray_views, seed) if xray_views else None
        budget = room.config.error_budget
    finally:
        tr.close()

    done = [r for r in rows if "error" not in r]

    def summary(key: str) -> dict[str, float] | None:
        v = [r[key] for r in done if r.get(key) is not None]
        if not v:
            return None
        return {"mean": float(np.mean(v)), "median": float(statistics.median(v)), "max": float(np.max(v)), "all": v}

    keys = ("real_to_virtual_mm", "real_to_virtual_axis_deg", "real_to_virtual_joints_mm", "real_to_virtual_moving_mm",
            "virtual_to_real_open_mm", "virtual_to_real_open_axis_deg", "virtual_to_real_closed_mm",
            "virtual_to_real_closed_axis_deg", "closed_loop_iterations")
    return {
        "scene": str(room.config.path.name),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seed": seed,
        "frame": "patient reference marker (ref), mm",
        "error_budget": {"terms_on": sorted(budget.terms), **{k: v for k, v in vars(budget).items() if k != "terms"}},
        "kinematic_errors": vars(room.robots["operation"].config.kinematic_errors),
        "closed_loop": {"tolerance_mm": tol_mm, "tolerance_deg": tol_deg, "max_iterations": max_iterations},
        "timings_s": tr.timings_s,
        "calibration_residuals": cal.residuals,
        "carm_calibration": cal.carm.to_dict() if cal.carm is not None else None,
        "ground_truth_checks": {"registration_tre_at_target_mm": reg_tre, "T_ref_base_position_error_mm": base_err},
        "xray_chain": chain,
        "points": rows,
        "failed_points": len(rows) - len(done),
        **{k: summary(k) for k in keys},
        "reference_seed004": {"real_to_virtual_mm": {"mean": 1.723, "all": SEED004_REAL_TO_VIRTUAL_MM},
                              "virtual_to_real_mm": {"mean": 7.052, "all": SEED004_VIRTUAL_TO_REAL_MM}},
        "targets": {"real_to_virtual_mean_mm": 0.5, "virtual_to_real_closed_mean_mm": 1.0, "tre_mean_mm": 1.0,
                    "axis_closed_mean_deg": 1.0},
        "tracker_spec_rms_mm": 0.12,
    }


def _m(s: dict[str, float] | None, fmt: str = ".3f") -> str:
    return "-" if s is None else format(s["mean"], fmt)


def format_mapping_bench(r: dict[str, Any]) -> str:
    pts = [p for p in r["points"] if "error" not in p]
    per_point = table(
        ["point", "real->virtual tip mm", "axis deg", "(joints) mm", "moving mm", "v->r open mm", "open axis deg",
         "v->r closed mm", "closed axis deg", "iterations"],
        [[i + 1, f"{p['real_to_virtual_mm']:.3f}", f"{p['real_to_virtual_axis_deg']:.3f}", f"{p['real_to_virtual_joints_mm']:.3f}",
          "-" if p["real_to_virtual_moving_mm"] is None else f"{p['real_to_virtual_moving_mm']:.2f}",
          f"{p['virtual_to_real_open_mm']:.3f}", f"{p['virtual_to_real_open_axis_deg']:.3f}",
          f"{p['virtual_to_real_closed_mm']:.3f}", f"{p['virtual_to_real_closed_axis_deg']:.3f}", p["closed_loop_iterations"]]
         for i, p in enumerate(pts)])
    s = r["reference_seed004"]
    rows = [["real-to-virtual, tip (tracker + calibration)", _m(r["real_to_virtual_mm"]), f"{s['real_to_virtual_mm']['mean']:.3f}", "<= 0.5"],
            ["real-to-virtual, axis (deg)", _m(r["real_to_virtual_axis_deg"]), "", ""],
            ["real-to-virtual, tip from joint readings (nominal kinematics)", _m(r["real_to_virtual_joints_mm"]), "", ""],
            ["real-to-virtual, tip while moving (single fresh frames)", _m(r["real_to_virtual_moving_mm"]), "", ""],
            ["virtual-to-real, open loop, tip", _m(r["virtual_to_real_open_mm"]), f"{s['virtual_to_real_mm']['mean']:.3f}", ""],
            ["virtual-to-real, open loop, axis (deg)", _m(r["virtual_to_real_open_axis_deg"]), "", ""],
            ["virtual-to-real, closed loop, tip", _m(r["virtual_to_real_closed_mm"]), "", "<= 1.0"],
            ["virtual-to-real, closed loop, axis (deg)", _m(r["virtual_to_real_closed_axis_deg"]), "", "<= 1.0"]]
    c = r.get("xray_chain")
    if c:
        rows.append([f"TRE at the vertebra through X-rays ({' + '.join(c['views'])}), mean of {len(c['tre_mm'])} landmarks",
                     f"{c['tre_mean_mm']:.3f}", "", "<= 1.0"])
    summary = table([f"mapping, mean over {len(pts)} points (mm unless deg)", "ours", "seed 004", "target"], rows)
    g = r["ground_truth_checks"]
    extra = (f"error budget on: {', '.join(r['error_budget']['terms_on']) or 'none'}; "
             f"registration (CT) error at the target's centroid {g['registration_tre_at_target_mm']:.3f} mm; "
             f"robot base position error {g['T_ref_base_position_error_mm']:.2f} mm")
    if c:
        extra += ("\nTRE per landmark: " + ", ".join(f"{k} {v:.2f} mm" for k, v in c["tre_mm"].items())
                  + f"; reconstruction DICE {c['dice']:.3f}")
    if r["failed_points"]:
        extra += f"\n{r['failed_points']} point(s) failed: " + "; ".join(p["error"] for p in r["points"] if "error" in p)
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


def _budget_runs(budget: str | None) -> list[tuple[str, list[str] | None]]:
    """(label, terms) per run: the scene's budget, a list of terms, none, or the ablation (each term alone)."""
    if budget is None:
        return [("scene", None)]
    if budget == "none":
        return [("none", [])]
    if budget == "ablation":
        return [("none", []), *[(t, [t]) for t in BUDGET_TERMS], ("all", list(BUDGET_TERMS))]
    terms = [t.strip() for t in budget.split(",") if t.strip()]
    return [(",".join(terms), terms)]


def format_ablation(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for label, r in results.items():
        c = r.get("xray_chain") or {}
        rows.append([label, _m(r["real_to_virtual_mm"]), _m(r["real_to_virtual_axis_deg"]), _m(r["real_to_virtual_moving_mm"], ".2f"),
                     _m(r["virtual_to_real_closed_mm"]), _m(r["virtual_to_real_closed_axis_deg"]),
                     num(c.get("tre_mean_mm"), ".3f"), num(c.get("dice"), ".3f"),
                     f"{r['ground_truth_checks']['registration_tre_at_target_mm']:.3f}"])
    return table(["error budget terms on", "real->virtual mm", "axis deg", "moving mm", "closed loop mm", "closed axis deg",
                  "TRE (X-rays) mm", "DICE", "TRE (CT registration) mm"], rows)


def mapping_state(context: dict[str, Any]) -> dict[str, Any]:
    """Nothing shared between the rows: each builds and calibrates its own room with its own error terms."""
    return context


def mapping_case(context: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """One row of the ablation (a case of :func:`twinsim.bench.runner.run_cases`): the whole bench, ``spec["terms"]`` on."""
    from twinsim.twin.calibration_set import load_calibration

    cal = load_calibration(Path(context["calibration"])) if context.get("calibration") else None
    return run_mapping_bench(context["scene"], seed=context["seed"], calibration=cal, progress=context.get("_progress"),
                             terms=spec["terms"])


def main(scene: str | None, out: Path, seed: int, calibration: Path | None = None, budget: str | None = None,
         runner: RunnerSettings | None = None) -> int:
    from twinsim.anatomy.wheel_data import content_digest
    from twinsim.bench.case_inputs import scene_digest
    from twinsim.twin.calibration_set import load_calibration

    runs = _budget_runs(budget)
    if calibration is not None:
        load_calibration(calibration)  # a bad file is refused before any room is built
    runner = runner or RunnerSettings()
    context = {"scene": str(Path(scene).resolve()) if scene else None, "scene_digest": scene_digest(scene), "seed": seed,
               "calibration": str(calibration.resolve()) if calibration else None,
               "calibration_digest": content_digest([calibration]) if calibration else None,
               "_progress": False if runner.uses_ray and len(runs) > 1 else None}  # the points' bar where not interleaved
    specs = [{"label": label, "terms": terms} for label, terms in runs]
    results: dict[str, dict[str, Any]] = {}
    print(f"twinsim bench mapping [{', '.join(label for label, _ in runs)}]: calibration chain and C-arm calibration, "
          f"10 needle-guide poses open and closed loop, then two tracked X-rays and the reconstruction; {runner.describe()}",
          flush=True)

    def finished(res: CaseResult) -> None:
        label = specs[res.index]["label"]
        if res.record is None:
            tqdm.write(f"bench mapping [{label}]: failed twice: {res.error}")
            return
        results[label] = res.record
        tqdm.write(f"bench mapping [{label}]:\n{format_mapping_bench(res.record)}")
        if len(runs) > 1:  # a long run keeps what it has, in the ablation's order
            write_json(out, {"ablation": {s["label"]: results[s["label"]] for s in specs if s["label"] in results},
                             "complete": False})

    run = run_cases("mapping", mapping_case, mapping_state, context, specs, runner, desc="bench mapping", on_result=finished)
    failed = [specs[r.index]["label"] for r in run.results if r.failed]
    results = {s["label"]: r.record for s, r in zip(specs, run.results, strict=True) if r.record is not None}
    if len(runs) == 1:
        if failed:
            print(f"twinsim bench mapping: the run failed: {run.results[0].error}")
            return 1
        r = results[specs[0]["label"]]
        print(f"wrote {write_json(out, r)}")
        print(f"wrote {plot_mapping(r, out.with_suffix('.png'))}")
        return 0
    write_json(out, {"ablation": results, "complete": not failed, "runner": run.summary(),
                     **({"failed": {specs[r.index]["label"]: r.error for r in run.results if r.failed}} if failed else {})})
    print(format_ablation(results))
    print(f"wrote {out}" + (f"; failed twice: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
