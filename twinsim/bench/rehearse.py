"""``twinsim bench rehearse``: seeded rehearsals end to end, scored in the true anatomy.

Evaluation code. One simulated rig (the scene's room, its error budget, the committed
calibration when the scene is the rig's own, else calibrated once by the driver) carries every
case: random view pairs on the side where the tracker sees the C-arm's marker and the C-arm
clears everything, clicks of each ``--click-sigma-mm``. The cases run through the bench runner,
each worker in its own copy of the room, and each case starts from the room as built with every
random source reseeded from its seed (:mod:`twinsim.rigs.sim_reset`). Per case: success (both guides placed and
breach-free in the true bone), each needle's tip and axis error against the plan, motions
refused and sent, wall time per step. A 2D-GeoPlan row (paths drawn in both X-rays from the
ideal ones, triangulated with the tracked geometry) runs the same pairs at the first click
level. The figures include everything: tracking, both calibrations, the reconstruction, the
plan, the robot and the closed loop.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from twinsim.bench.plan import wilson_interval
from twinsim.bench.recon_tracked import TRACKED_LAO_RANGE_DEG
from twinsim.bench.runner import RunnerSettings, run_cases, session
from twinsim.evaluation.clinician import ClickModel
from twinsim.evaluation.geoplan import GeoPlanSettings, geoplan
from twinsim.evaluation.placement_truth import SimVerifier
from twinsim.evaluation.realistic_clicks import Clinician
from twinsim.hal.errors import HalError
from twinsim.hal.interfaces import CArmView
from twinsim.hal.rig import SimRig, load_rig
from twinsim.imaging.views import sample_view_pairs
from twinsim.logs import quiet
from twinsim.planning.planner import PathPlan, VertebraPlan
from twinsim.planning.settings import PlanSettings
from twinsim.procedure.rehearsal import RehearsalRecord, RehearsalSettings
from twinsim.procedure.steps import Step
from twinsim.report import num, table, write_json
from twinsim.rigs.open_rig import new_rehearsal, open_rig
from twinsim.rigs.sim_reset import reset_sim_room
from twinsim.tracking.tools import CARM_MARKER, REFERENCE
from twinsim.twin.calibration_set import load_calibration
from twinsim.twin.tracker_view import ToolIndex
from twinsim.workflows.calibration import read_frames

SIDES = ("left", "right")


def _allowed_pairs(dev: Any, n: int, seed: int) -> tuple[list[tuple[CArmView, CArmView]], list[dict[str, Any]]]:
    """``n`` random pairs the room allows: the C-arm reaches both views without touching anything, and the
    tracker sees its marker there (without it no tracked X-ray can be taken)."""
    idx = ToolIndex(dev.tracker)
    pairs, refused, k = [], [], 0
    while len(pairs) < n and k < 20:
        for a, b in sample_view_pairs(n, seed=seed + 101 * k, lao_range_deg=TRACKED_LAO_RANGE_DEG):
            views = (CArmView(a.name, a.lao_deg, a.cranial_deg), CArmView(b.name, b.lao_deg, b.cranial_deg))
            try:
                for v in views:
                    dev.carm.move_to(v)
                    idx.pose_in(read_frames(dev.tracker, 5), CARM_MARKER, REFERENCE)
            except HalError as exc:
                refused.append({"views": [v.name for v in views], "why": str(exc)})
                continue
            pairs.append(views)
            if len(pairs) == n:
                break
        k += 1
    dev.carm.park()
    return pairs, refused


def geoplan_source(verifier: SimVerifier, click_sigma_mm: float, seed: int) -> Any:
    """The 2D-GeoPlan baseline as the rehearsal's plan: ideal paths drawn in both X-rays, triangulated in ``ref``."""
    def make(reh: RehearsalRecord) -> VertebraPlan:
        truth = verifier.truth(reh.settings.plan)
        T_ref_ct = np.linalg.inv(verifier.T_ct_ref_mm())
        ideal = {s: tuple(T_ref_ct[:3, :3] @ x + T_ref_ct[:3, 3] for x in (p.entry_mm, p.target_mm))
                 for s, p in truth.ceiling.paths.items()}
        true_ref = [g.in_frame(T_ref_ct, "ref") for g in (verifier.dev.carm.true_geometry(a) for a in reh.registration.acquisitions)]
        drawn = geoplan(true_ref, ideal, GeoPlanSettings(click_sigma_mm=click_sigma_mm,
                                                         cannula_diameter_mm=reh.settings.plan.cannula_diameter_mm), seed,
                        triangulate_with=[a.geometry for a in reh.registration.acquisitions])
        paths = {}
        for side, d in drawn.items():
            if isinstance(d, str):
                paths[side] = PathPlan(side, ideal[side][0], ideal[side][1], "2D-GeoPlan", safe=False, reasons=[d])
            else:
                paths[side] = PathPlan(side, d[0], d[1], "2D-GeoPlan", safe=True)  # the baseline has no 3D check
        return VertebraPlan(paths, float("nan"), reh.settings.plan, "ref")
    return make


PRE_PLAN_STEPS = ("rig", "calibration", "x-rays", "landmarks", "reconstruction")


def plan_in_truth(r: RehearsalRecord, verifier: SimVerifier) -> dict[str, dict[str, Any]]:
    """Each path of the rehearsal's plan scored in the true bone, whether or not a guide was placed on it."""
    plan = r.registration.plan if r.registration is not None else None
    if plan is None:
        return {}
    T_ct_ref = verifier.T_ct_ref_mm()
    lines = {s: (T_ct_ref[:3, :3] @ p.entry_mm + T_ct_ref[:3, 3], T_ct_ref[:3, :3] @ p.target_mm + T_ct_ref[:3, 3])
             for s, p in plan.paths.items()}
    scored = verifier.truth(r.settings.plan).score(lines)
    return {s: {"given_as_safe": bool(plan.paths[s].safe), "safe_in_truth": bool(v["safe_in_truth"]),
                "clearance_mm": v["clearance_mm"], "breach": bool(v["breach"])} for s, v in scored.items()}


def _case_row(r: RehearsalRecord, wall_s: float, verifier: SimVerifier | None = None) -> dict[str, Any]:
    log = r.log
    steps = {s.name: s.seconds for s in log.steps}
    truth = {side: g.truth for side, g in r.placed.items() if g.truth}
    placed = r.succeeded
    safe = placed and all(not truth[s]["breach"] and truth[s]["tip_in_body"] for s in SIDES if s in truth) and len(truth) == 2
    m = log.meta.get("motions", {})
    survey = next((s.figures for s in log.steps if s.name == "survey"), {})
    return {"outcome": log.summary, "placed": placed, "success": bool(safe),
            "tip_error_mm": {s: t["tip_error_mm"] for s, t in truth.items()},
            "axis_error_deg": {s: t["axis_error_deg"] for s, t in truth.items()},
            "breach": {s: t["breach"] for s, t in truth.items()}, "clearance_mm": {s: t["clearance_mm"] for s, t in truth.items()},
            "plan_safe_in_truth": {s: t["plan_safe_in_truth"] for s, t in truth.items()},
            "motions_sent": m.get("sent", 0), "motions_refused": m.get("refused", 0),
            "motions_sent_without_passed_check": m.get("sent_without_passed_check", 0),
            "check_200_waypoints_ms": survey.get("check_200_waypoints", {}).get("median_ms"),
            "twin_bodies": survey.get("check_200_waypoints", {}).get("bodies"),
            "recommendation": log.recommendation, "step_s": steps, "wall_s": wall_s,
            "stopped_at": log.stop.step if log.stop else None, "plan_in_truth": plan_in_truth(r, verifier) if verifier is not None else {}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n, k = len(rows), sum(r["success"] for r in rows)
    tips = [v for r in rows for v in r["tip_error_mm"].values()]
    axes = [v for r in rows for v in r["axis_error_deg"].values()]
    steps: dict[str, list[float]] = {}
    for r in rows:
        for name, sec in r["step_s"].items():
            steps.setdefault(name, []).append(sec)
    return {"cases": n, "successes": k, "success_rate": k / n if n else None, "success_ci95": wilson_interval(k, n),
            "placed": sum(r["placed"] for r in rows),
            "mistakes_made": sum(len(r.get("mistakes", [])) for r in rows),
            "input_corrected": sum(1 for r in rows if str(r.get("input_check") or "").endswith("corrected")),
            "marked_again": sum(r.get("marked_again", 0) for r in rows),
            "tip_error_mm": {"median": _q(tips, 50), "p95": _q(tips, 95), "max": max(tips) if tips else None},
            "axis_error_deg": {"median": _q(axes, 50), "p95": _q(axes, 95), "max": max(axes) if axes else None},
            "motions_sent": sum(r["motions_sent"] for r in rows), "motions_refused": sum(r["motions_refused"] for r in rows),
            "motions_sent_without_passed_check": sum(r["motions_sent_without_passed_check"] for r in rows),
            "step_s_median": {k_: float(np.median(v)) for k_, v in steps.items()},
            "outcomes": sorted({r["outcome"] for r in rows if not r["success"]})}


def _q(v: list[float], q: float) -> float | None:
    return float(np.percentile(v, q)) if v else None


def calibrate_once(dev: Any, out: Path, seed: int) -> Path:
    """The rig calibrated as a rehearsal's first step would (tool chain, then the C-arm with its bead phantom),
    written to ``out``: every case of a bench then starts from this one calibration, on any worker."""
    from twinsim.tracking.calibration import CalibrationError
    from twinsim.twin.calibration_set import save_calibration
    from twinsim.workflows.calibration import SessionSettings, run_calibration
    from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom

    d = dev.devices
    if d.carm_phantom is None:
        raise CalibrationError("the rig names no C-arm bead phantom, and a bench needs its C-arm calibrated")
    cal = run_calibration(d.arm, d.tracker, d.model, d.operator, d.registration, SessionSettings(seed=seed), progress=False)
    cal.carm = calibrate_carm_with_phantom(d.carm, d.tracker, d.carm_phantom, operator=d.operator).result
    return save_calibration(cal, out)


def _rehearse_state(ctx: dict[str, Any]) -> SimpleNamespace:
    """A worker's room: the rig opened once, its calibration loaded, the simulated clinician and the verifier."""
    rig = SimRig.model_validate(ctx["rig"])
    dev = open_rig(rig, progress=False)
    try:
        verifier = SimVerifier(dev, dev.target_level)
        clicker = dev.operator.click
        assert isinstance(clicker, ClickModel)
        clicker.clinician = ctx["clinician"]
        return SimpleNamespace(ctx=ctx, dev=dev, verifier=verifier, clicker=clicker, cal=load_calibration(ctx["calibration"]),
                               physical_home=dev.room.joint_positions("operation"), close=dev.close)
    except Exception:
        dev.close()
        raise


def rehearse_case(st: SimpleNamespace, spec: dict[str, Any]) -> dict[str, Any]:
    """One rehearsal from the room as built, every random source reseeded from the case's seed; its row."""
    dev, ctx, clicker = st.dev, st.ctx, st.clicker
    pair = tuple(CArmView(*v) for v in spec["views"])
    case_seed, sigma = spec["case_seed"], spec["click_sigma_mm"]
    reset_sim_room(dev, st.physical_home, case_seed)
    dev.carm.park()
    dev.tracker.refill()
    dev.operator.click_sigma_mm = sigma
    plan_source = geoplan_source(st.verifier, sigma, case_seed) if spec["source"] == "geoplan" else None
    reh = new_rehearsal(dev, Path(spec["_out"]), RehearsalSettings(views=pair, seed=case_seed, plan=ctx["plan"]), st.cal,
                        st.verifier, plan_source=plan_source)
    t0 = time.perf_counter()
    clicker.mistakes.clear()
    with quiet("twinsim.procedure"):  # the cases' steps are not news; the bar counts them
        record = reh.run()
    marked = next((s.figures for s in record.log.steps if s.name == Step.LANDMARKS), {})
    return {"views": [v.name for v in pair], "angles_deg": [[v.lao_deg, v.cranial_deg] for v in pair],
            "mistakes": [m for m in clicker.mistakes if m], "input_check": marked.get("input_check"),
            "marked_again": len(marked.get("marked_again_after", [])),
            **_case_row(record, time.perf_counter() - t0, st.verifier)}


def run_rehearse_bench(scenario: str | None = None, n_pairs: int = 10, seed: int = 0, click_sigmas_mm: tuple[float, ...] = (1.0, 3.0),
                       with_geoplan: bool = True, out_dir: Path | None = None, progress: bool | None = None,
                       plan: PlanSettings | None = None, clinician: Clinician | None = None,
                       runner: RunnerSettings | None = None) -> dict[str, Any]:
    """``plan``: the planner's settings (the instrument); None: its defaults. ``clinician``: who marks the landmarks
    (evaluation code); None: the ideal one. ``runner``: serial in this process (default) or Ray workers, each with
    its own room (:mod:`twinsim.bench.runner`); every case starts from the room as built, so the records are the same."""
    from twinsim.anatomy.wheel_data import content_digest
    from twinsim.bench.case_inputs import scene_digest

    clinician = clinician or Clinician()
    runner = runner or RunnerSettings(progress=progress)
    rig = load_rig(None)
    assert isinstance(rig, SimRig)
    committed = rig.calibration if scenario is None and rig.calibration and rig.calibration.is_file() else None
    if scenario is not None:
        rig = rig.model_copy(update={"scene": Path(scenario).resolve()})
    cases_dir = out_dir or Path("out/bench_rehearse_cases")
    with session(runner, warm=[__name__]):
        # The driver's own room: which view pairs the room allows, and the calibration when the rig has none for it.
        t0 = time.perf_counter()
        with open_rig(rig, progress=False) as dev:
            physical_home = dev.room.joint_positions("operation")
            pairs, refused = _allowed_pairs(dev, n_pairs, seed)
            if not committed:  # from the room as built: the calibration does not depend on how many pairs were tried
                reset_sim_room(dev, physical_home, seed)
                dev.carm.park()
                dev.tracker.refill()
            calibration = committed or calibrate_once(dev, cases_dir / "calibration.json", seed)
        prepare_s = time.perf_counter() - t0
        ctx = {"rig": rig.model_dump(mode="json"), "scene": scene_digest(rig.scene), "calibration": str(Path(calibration).resolve()),
               "calibration_digest": content_digest([Path(calibration)]), "plan": plan or PlanSettings(), "clinician": clinician}
        runs = [(f"ours, clicks {s:g} mm", s, None) for s in click_sigmas_mm]
        if with_geoplan:
            runs.append((f"2D-GeoPlan, clicks {click_sigmas_mm[0]:g} mm", click_sigmas_mm[0], "geoplan"))
        specs = [{"run": name, "click_sigma_mm": sigma, "source": source, "k": k, "case_seed": seed * 1000 + k,
                  "views": [[v.name, v.lao_deg, v.cranial_deg] for v in pair],
                  "_out": str(cases_dir / f"{name.split(',')[0].replace(' ', '')}_{sigma:g}mm_{k:02d}")}
                 for name, sigma, source in runs for k, pair in enumerate(pairs)]
        run = run_cases("rehearse", rehearse_case, _rehearse_state, ctx, specs, runner, desc="rehearsals")
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in runs}
    for spec, res in zip(specs, run.results, strict=True):
        rows[spec["run"]].append(res.record or _failed_row(spec, res.error))
    checks = [r["check_200_waypoints_ms"] for rs in rows.values() for r in rs if r["check_200_waypoints_ms"] is not None]
    bodies = sorted({r["twin_bodies"] for rs in rows.values() for r in rs if r["twin_bodies"]})
    return {"benchmark": "rehearse", "scenario": scenario or "scenarios/rooms/default.yaml", "seed": seed, "pairs": len(pairs),
            "clinician": asdict(clinician), "calibration": "the rig's committed file" if committed else
            f"measured once before the cases ({Path(calibration).name})",
            "refused_pairs": refused, "machine": {"platform": platform.platform()},
            "runner": {**run.summary(), "prepare_s": prepare_s},
            "collision_check_200_waypoints_ms": {"median": float(np.median(checks)) if checks else None,
                                                 "twin_bodies": bodies, "note": "median of each rehearsal's median of 5"},
            "summary": {name: _summary(rs) for name, rs in rows.items()}, "cases": rows}


def _failed_row(spec: dict[str, Any], error: str | None) -> dict[str, Any]:
    """A case whose run failed twice (an exception, a worker lost): counted, not a success, with its error."""
    return {"views": [v[0] for v in spec["views"]], "outcome": f"the case failed twice: {error}", "placed": False,
            "success": False, "tip_error_mm": {}, "axis_error_deg": {}, "breach": {}, "clearance_mm": {},
            "plan_safe_in_truth": {}, "motions_sent": 0, "motions_refused": 0, "motions_sent_without_passed_check": 0,
            "check_200_waypoints_ms": None, "twin_bodies": None, "recommendation": None, "step_s": {}, "wall_s": 0.0,
            "stopped_at": None, "plan_in_truth": {}, "mistakes": []}


def format_rehearse_bench(r: dict[str, Any]) -> str:
    rows = []
    for name, s in r["summary"].items():
        lo, hi = s["success_ci95"]
        rows.append([name, f"{s['successes']}/{s['cases']}", f"{100 * (s['success_rate'] or 0):.0f} % [{100 * lo:.0f}-{100 * hi:.0f}]",
                     s["placed"], num(s["tip_error_mm"]["median"], ".2f") + " / " + num(s["tip_error_mm"]["max"], ".2f"),
                     num(s["axis_error_deg"]["median"], ".2f") + " / " + num(s["axis_error_deg"]["max"], ".2f"),
                     s["motions_sent"], s["motions_refused"], s["motions_sent_without_passed_check"]])
    t = table(["method", "success", "rate [95 % CI]", "both placed", "tip mm med/max", "axis deg med/max", "motions sent",
               "refused", "sent unchecked"], rows)
    c = r["collision_check_200_waypoints_ms"]
    steps = next(iter(r["summary"].values()))["step_s_median"] if r["summary"] else {}
    lines = [t, f"collision check of a 200-waypoint trajectory: median {num(c['median'], '.1f')} ms with {c['twin_bodies']} bodies "
                f"in the twin (robot included)",
             "median wall time per step (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items())]
    for name, s in r["summary"].items():
        for o in s["outcomes"]:
            lines.append(f"{name}: not a success: {o[:160]}")
    return "\n".join(lines)


def main(scenario: str | None, out: Path, n_pairs: int, seed: int, click_sigmas_mm: tuple[float, ...], with_geoplan: bool,
         clinician: Clinician | None = None, runner: RunnerSettings | None = None) -> int:
    clinician = clinician or Clinician()
    print(f"twinsim bench rehearse: {n_pairs} random view pairs, clicks {', '.join(f'{s:g}' for s in click_sigmas_mm)} mm, "
          f"{clinician.kind} clinician{', plus 2D-GeoPlan' if with_geoplan else ''}; error budget as the scene says; "
          f"{(runner or RunnerSettings()).describe()}", flush=True)
    r = run_rehearse_bench(scenario, n_pairs, seed, click_sigmas_mm, with_geoplan, out.parent / f"{out.stem}_cases",
                           clinician=clinician, runner=runner)
    print(format_rehearse_bench(r))
    print(f"wrote {write_json(out, r)}")
    return 0
