"""``twinsim bench plan``: how often the plan is safe in the true bone (seed 000, section 5.4, without a grader).

Per level, on DRRs of the patient CT at AP + LAT and seeded random view pairs, with a simulated
clinician's clicks (evaluation code), five ways to get both paths:

- ``ours``: reconstruction, transfer, refinement, safety check (``twinsim reconstruct --plan``);
- ``ours_transfer``: the same reconstruction, the model's paths transferred, no refinement;
- ``init_transfer``: the model's mean at the initial pose (clicks only), transferred;
- ``geoplan``: 2D-GeoPlan, entry and target marked in 2D in each view and triangulated;
- ``model_floor``: the planner on the shape model fitted to the true surface (a perfect
  reconstruction with this model; one plan per level);
- ``ceiling``: the planner on the true surface (one plan per level: the views do not enter it).

A vertebra succeeds when both paths are given (accepted by the method's own safety check, where
it has one) and both are safe in the true bone. Paths a method accepted that breach in truth
are counted apart: that is the dangerous failure.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from scipy.stats import binomtest

from twinsim import frames
from twinsim.anatomy.ct import load_ct
from twinsim.anatomy.patient import build_patient
from twinsim.anatomy.wheel_data import content_digest
from twinsim.bench.recon import acquire, iter_summaries, view_geometry
from twinsim.bench.runner import CASE_THREADS, RunnerSettings, run_cases, session
from twinsim.evaluation.geoplan import GeoPlanSettings, geoplan
from twinsim.evaluation.plan_truth import TrueVertebra, plan_paths
from twinsim.evaluation.realistic_clicks import Clinician, neighbour_offset_mm
from twinsim.evaluation.surroundings import check_surroundings, with_surroundings
from twinsim.imaging.drr import DRRRenderer
from twinsim.imaging.landmarks_file import CLICKABLE
from twinsim.imaging.views import NAMED_VIEWS, View, sample_view_pairs
from twinsim.planning.planner import plan_vertebra
from twinsim.planning.settings import PlanSettings
from twinsim.recon.consistency import ClickConsistencyError, checked_initial_pose
from twinsim.recon.fit import FitSettings, default_model_name, reconstruct, save_reconstruction
from twinsim.report import num, table, write_figure, write_json
from twinsim.shape.model import load_model
from twinsim.shape.regions import MODEL_LEVELS

METHODS = ("ours", "ours_transfer", "init_transfer", "geoplan", "model_floor", "ceiling")
LABELS = {"ours": "ours (recon + planner)", "ours_transfer": "ours, transfer only", "init_transfer": "initial pose, transfer only",
          "geoplan": "2D-GeoPlan", "model_floor": "planner on the model fitted to the truth", "ceiling": "planner on the true surface"}
TARGETS = {"L1_random_success_min": {"1": 0.90, "3": 0.80}, "lead_over_geoplan_points": 10.0, "ceiling_success": 1.0}
SEED000 = {"ours_success_synthetic": 0.82, "ours_success_cadaver": 0.75, "geoplan_success_synthetic": 0.66,
           "geoplan_success_cadaver": 0.31}


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate k/n (nan without cases)."""
    if n == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def _case_row(scores: dict[str, Any] | None, reason: str | None = None, seconds: float = 0.0) -> dict[str, Any]:
    if scores is None:
        return {"success": False, "error": reason, "paths": {}, "seconds": seconds}
    ok = all((p["accepted"] is not False) and p["safe_in_truth"] for p in scores.values()) and len(scores) == 2
    return {"success": bool(ok), "paths": scores, "seconds": seconds, **({"error": reason} if reason else {})}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Success with its interval; path figures over every path a method produced (refused ones too)."""
    n = len(rows)
    k = sum(r["success"] for r in rows)
    paths = [p for r in rows for p in r["paths"].values()]
    produced = [p for p in paths if "clearance_mm" in p]
    clear = [p["clearance_mm"] for p in produced]

    def med(key: str) -> float | None:
        vals = [p[key] for p in produced]
        return float(statistics.median(vals)) if vals else None

    return {"cases": n, "successes": k, "success_rate": k / n if n else None, "success_ci95": wilson_interval(k, n),
            "paths_missing": 2 * n - len(produced), "paths_refused": sum(1 for p in produced if p["accepted"] is False),
            "accepted_but_unsafe": sum(1 for p in produced if p["accepted"] is not False and not p["safe_in_truth"]),
            "accepted_but_unsafe_medial": sum(1 for p in produced if p["accepted"] is not False and not p["safe_in_truth"]
                                              and p["medial_breach"]),
            "breaches": sum(p["breach"] for p in produced), "medial_breaches": sum(p["medial_breach"] for p in produced),
            "clearance_median_mm": float(np.median(clear)) if clear else None,
            "clearance_p5_mm": float(np.percentile(clear, 5)) if clear else None,
            "entry_error_median_mm": med("entry_error_mm"), "target_error_median_mm": med("target_error_mm"),
            "angle_error_median_deg": med("angle_error_deg"),
            "mistakes_made": sum(1 for r in rows if r.get("mistake")),
            "input_corrected": sum(1 for r in rows if str(r.get("input_check", "")).endswith("corrected")),
            "input_refused": sum(1 for r in rows if r.get("input_refused")),
            "seconds_median": float(statistics.median(r["seconds"] for r in rows)) if rows else None}


def _plan_state(ctx: dict[str, Any]) -> SimpleNamespace:
    """A worker's state for one level: the CT, the patient meshes, the renderer, the model and the true vertebra."""
    level, settings, surroundings = ctx["level"], ctx["settings"], ctx["surroundings"]
    ct = load_ct(Path(ctx["ct"]), Path(ctx["labels"]), ctx["label_table"])
    patient = build_patient(Path(ctx["ct"]), Path(ctx["labels"]), ctx["label_table"], require_levels=[level], progress=False)
    model = load_model(ctx["model"])
    renderer = DRRRenderer(with_surroundings(ct, level, surroundings) if surroundings != "ct" else ct)
    # The truth's landmarks come from the driver (computed once per level), so every worker scores against the same.
    true_v = TrueVertebra(patient.vertebra(level), model, settings, landmarks=ctx["_truth_landmarks"])
    realistic = ctx["clinician"].kind == "realistic"
    return SimpleNamespace(ctx=ctx, patient=patient, model=model, renderer=renderer, true_v=true_v,
                           ceiling_paths=plan_paths(true_v.ceiling)[0],
                           bone=patient.vertebra(level) if realistic else None,
                           neighbour=neighbour_offset_mm(patient.vertebrae, level) if realistic else None)


def plan_case(st: SimpleNamespace, spec: dict[str, Any]) -> dict[str, Any]:
    """One view pair: rendered, clicked, reconstructed and planned four ways, each scored in the true bone."""
    ctx = st.ctx
    level, settings, fit_settings, model, true_v = ctx["level"], ctx["settings"], ctx["fit"], st.model, st.true_v
    va, vb = (View(*v) for v in spec["views"])
    case_seed = spec["case_seed"]
    centre = st.patient.vertebra(level).centroid_mm
    acqs = [acquire(st.renderer, view_geometry(centre, v, ctx["size_px"]), v, case_seed + j) for j, v in enumerate((va, vb))]
    geoms = [a.geometry for a in acqs]
    clicks, mistake = ctx["clinician"].mark(geoms, true_v.landmarks, ctx["click_sigma_mm"], case_seed, CLICKABLE, st.bone,
                                            st.neighbour)
    case = {"views": [va.name, vb.name], "separation_deg": va.beam_angle_to_deg(vb), "mistake": mistake}
    rows: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    gp = geoplan(geoms, st.ceiling_paths, ctx["geo"], seed=case_seed + 7)
    missing = {s: v for s, v in gp.items() if isinstance(v, str)}
    given = {s: v for s, v in gp.items() if not isinstance(v, str)}
    gp_scores = true_v.score(given) if given else {}
    for s, why in missing.items():
        gp_scores[s] = {"accepted": False, "reason": why, "safe_in_truth": False}
    rows["geoplan"] = {**case, **_case_row(gp_scores, "; ".join(missing.values()) or None, time.perf_counter() - t)}
    folder = Path(spec["folder"]) if spec.get("folder") else None
    saved = folder / f"{level}_reconstruction.json" if folder is not None else None
    try:
        if spec.get("reuse") and saved is not None and saved.is_file():
            rec = json.loads(saved.read_text())
            T_fit, coeffs, frame = np.asarray(rec["T_frame_model_mm"]), np.asarray(rec["coeffs_sd"]), rec["frame"]
            T_init, init_s, recon_s = np.asarray(rec["initialization"]["T_frame_model_mm"]), 0.0, float(rec["wall_s"])
            r = None
        else:
            t = time.perf_counter()
            init = checked_initial_pose(model, acqs, clicks, fit_settings.click_sigma_mm)
            init_s = time.perf_counter() - t
            r = reconstruct(model, acqs, clicks, fit_settings, init=init)
            T_fit, coeffs, frame, T_init, recon_s = r.T_frame_model, r.coeffs_sd, r.frame, init.T_frame_model, r.wall_s
    except ValueError as exc:
        for m in ("ours", "ours_transfer", "init_transfer"):
            rows[m] = {**case, **_case_row(None, str(exc)), "input_refused": isinstance(exc, ClickConsistencyError)}
        return rows
    v_fit = frames.transform_points(T_fit, model.instance(coeffs))
    v_init = frames.transform_points(T_init, model.mean_mm)
    for m, verts, refine, base_s in (("ours", v_fit, True, recon_s + init_s), ("ours_transfer", v_fit, False, recon_s + init_s),
                                     ("init_transfer", v_init, False, init_s)):
        t = time.perf_counter()
        try:
            plan = plan_vertebra(verts, model.faces, model.annotation_points(verts),
                                 PlanSettings(**{**settings.__dict__, "refine": refine}), frame=frame)
        except ValueError as exc:
            rows[m] = {**case, **_case_row(None, str(exc), base_s)}
            continue
        paths, ok = plan_paths(plan)
        row = _case_row(true_v.score(paths, ok), seconds=base_s + time.perf_counter() - t)
        row["refusals"] = {s: p.reasons for s, p in plan.paths.items() if p.reasons}
        if r is not None and r.initial.check is not None:
            row["input_check"] = r.initial.check.correction or "consistent"
        rows[m] = {**case, **row}
    if folder is not None and r is not None:
        names = [a.save(folder, v.name.replace("/", "_"))[0].name for a, v in zip(acqs, (va, vb), strict=True)]
        clicks.images, clicks.level = names, level
        clicks.save(folder / "clicks.json")
        save_reconstruction(folder / f"{level}_reconstruction.json", r, level, names)
    return rows


def run_plan_bench(ct_path: Path, labels_path: Path, label_table: str | None, levels: list[str], n_random: int = 20,
                   seed: int = 0, size_px: int = 512, click_sigma_mm: float = 1.0, settings: PlanSettings | None = None,
                   progress: bool | None = None, case_dir: Path | None = None, reuse_cases: bool = False,
                   on_level: Callable[[dict[str, Any]], None] | None = None, surroundings: str = "ct",
                   clinician: Clinician | None = None, runner: RunnerSettings | None = None,
                   fit_settings: FitSettings | None = None) -> dict[str, Any]:
    """All levels' results. ``reuse_cases``: take each case's reconstruction from ``case_dir`` where one was saved
    (the same seeds give the same images and clicks), so that planner settings can be compared without refitting.
    ``surroundings``: render the X-rays from the CT as it is, or with all but the level's vertebra replaced
    (:mod:`twinsim.evaluation.surroundings`), to measure what the clutter around the vertebra costs.
    ``runner``: serial in this process (default) or Ray workers (:mod:`twinsim.bench.runner`); the records are the same.
    ``fit_settings``: the fit's (default: the product's, at the clicks' noise); a shorter fit is for tests only."""
    check_surroundings(surroundings)
    clinician = clinician or Clinician()
    settings = settings or PlanSettings()
    runner = runner or RunnerSettings(progress=progress)
    fit_settings = fit_settings or FitSettings(click_sigma_mm=max(click_sigma_mm, 0.25))
    geo_settings = GeoPlanSettings(click_sigma_mm=click_sigma_mm, cannula_diameter_mm=settings.cannula_diameter_mm)
    patient = build_patient(ct_path, labels_path, label_table, require_levels=levels, progress=None)
    files_digest = content_digest([Path(ct_path), Path(labels_path), Path(label_table) if label_table else None])
    results: dict[str, Any] = {"levels": {}, "plan_settings": settings.__dict__, "geoplan_settings": asdict(geo_settings),
                               "click_sigma_mm": click_sigma_mm, "clinician": asdict(clinician), "surroundings": surroundings,
                               "image_px": size_px, "seed": seed, "random_pairs": n_random, "runner": []}
    pairs = {"ap_lat": [(NAMED_VIEWS["AP"], NAMED_VIEWS["LAT"])], "random": sample_view_pairs(n_random, seed=seed)}
    job = _PlanJob(Path(ct_path), Path(labels_path), label_table, patient, files_digest, settings, fit_settings, geo_settings,
                   clinician, click_sigma_mm, size_px, surroundings, seed, case_dir, reuse_cases, runner, pairs)
    with session(runner, warm=[__name__]):
        for level in levels:
            _plan_level(job, level, results)
            if on_level is not None:
                on_level(results)
    return results


@dataclass(frozen=True)
class _PlanJob:
    """What every level of one bench plan run shares."""

    ct_path: Path
    labels_path: Path
    label_table: str | None
    patient: Any
    files_digest: str
    settings: PlanSettings
    fit_settings: FitSettings
    geo_settings: GeoPlanSettings
    clinician: Clinician
    click_sigma_mm: float
    size_px: int
    surroundings: str
    seed: int
    case_dir: Path | None
    reuse_cases: bool
    runner: RunnerSettings
    pairs: dict[str, list]


def _plan_level(job: _PlanJob, level: str, results: dict[str, Any]) -> None:
    """One level: the truth once here, then its cases through the runner, summarized into ``results``."""
    model = load_model(default_model_name(level))
    t0 = time.perf_counter()
    true_v = TrueVertebra(job.patient.vertebra(level), model, job.settings)
    ceiling_paths, ceiling_ok = plan_paths(true_v.ceiling)
    ceiling_row = _case_row(true_v.score(ceiling_paths, ceiling_ok), seconds=time.perf_counter() - t0)
    floor_row = _case_row(true_v.score(*plan_paths(true_v.model_floor)))
    per: dict[str, Any] = {"model": model.name, "stress": level not in MODEL_LEVELS[model.name],
                           "ceiling_plan": {s: {"clearance_mm": p.min_clearance_mm, "safe": p.safe, "reasons": p.reasons}
                                            for s, p in true_v.ceiling.paths.items()}}
    ctx = {"ct": str(job.ct_path), "labels": str(job.labels_path), "label_table": job.label_table, "files": job.files_digest,
           "level": level, "model": model.name, "settings": job.settings, "fit": job.fit_settings, "geo": job.geo_settings,
           "clinician": job.clinician, "click_sigma_mm": job.click_sigma_mm, "size_px": job.size_px, "surroundings": job.surroundings,
           "_truth_landmarks": true_v.landmarks}
    specs, where = [], []
    for set_name, view_pairs in job.pairs.items():
        for k, (va, vb) in enumerate(view_pairs):
            folder = job.case_dir / level / f"{set_name}_{k:02d}" if job.case_dir is not None else None
            specs.append({"set": set_name, "k": k, "case_seed": job.seed * 1000 + 10 * k + (0 if set_name == "ap_lat" else 500),
                          "views": [[v.name, v.lao_deg, v.cranial_deg] for v in (va, vb)],
                          "folder": str(folder) if folder else None, "reuse": job.reuse_cases})
            where.append(set_name)
    run = run_cases("plan", plan_case, _plan_state, ctx, specs, job.runner, desc=f"bench plan {level}")
    results["runner"].append({"level": level, **run.summary()})
    rows: dict[str, dict[str, list]] = {set_name: {m: [] for m in METHODS} for set_name in job.pairs}
    for set_name, spec, res in zip(where, specs, run.results, strict=True):
        case = {"views": [v[0] for v in spec["views"]]}
        got = res.record or {m: {**case, **_case_row(None, f"case failed twice: {res.error}")}
                             for m in ("ours", "ours_transfer", "init_transfer", "geoplan")}
        for m in ("ours", "ours_transfer", "init_transfer", "geoplan"):
            rows[set_name][m].append(got[m])
        base = {k: got["ours"][k] for k in ("views", "separation_deg", "mistake") if k in got["ours"]}
        rows[set_name]["ceiling"].append({**base, **ceiling_row})
        rows[set_name]["model_floor"].append({**base, **floor_row})
    for set_name in job.pairs:
        per[set_name] = {m: {"summary": summarize(rows[set_name][m]), "cases": rows[set_name][m]} for m in METHODS}
    results["levels"][level] = per


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def format_plan_bench(r: dict[str, Any]) -> str:
    rows = []
    for level, views, m, s in iter_summaries(r, METHODS):
        lo, hi = s["success_ci95"]
        rows.append([level, views, LABELS[m], f"{_pct(s['success_rate'])} % [{_pct(lo)}-{_pct(hi)}]",
                     f"{s['paths_missing']} / {s['paths_refused']}", f"{s['accepted_but_unsafe']}", f"{s['breaches']} ({s['medial_breaches']})",
                     f"{num(s['clearance_median_mm'], '.2f')} / {num(s['clearance_p5_mm'], '.2f')}",
                     f"{num(s['entry_error_median_mm'], '.1f')} / {num(s['target_error_median_mm'], '.1f')}",
                     num(s["angle_error_median_deg"], ".1f"), num(s["seconds_median"], ".1f")])
    t = table(["level", "views", "method", "success [95% CI]", "paths missing / refused", "given, unsafe", "breaches (medial)",
               "clearance mm med / p5", "entry / target err mm", "angle err deg", "s/case"], rows)
    ref = r["reference_seed000"]
    around = r.get("surroundings", "ct")
    ablation = "" if around == "ct" else (f"; X-rays rendered with everything but the vertebra as {around} "
                                         "(an ablation of the clutter, not the clinical case)")
    return (t + f"\nclicks {r['click_sigma_mm']:g} mm{ablation}; success: both paths given (and accepted by the method's own check) and both safe "
            f"in the true bone ({r['plan_settings']['cannula_diameter_mm']:g} mm cannula at least its radius from the true cortex "
            "below the docking zone, tip in the true body). 'given, unsafe': paths the method handed on (accepted by its own "
            "check, where it has one) that are unsafe in the true bone. Clearance, breaches and errors over every path produced, "
            f"refused ones too; errors against the planner on the true surface.\nseed 000 (graded by a clinician): ours {100 * ref['ours_success_synthetic']:.0f} % synthetic / "
            f"{100 * ref['ours_success_cadaver']:.0f} % cadaver, 2D-GeoPlan {100 * ref['geoplan_success_synthetic']:.0f} % / "
            f"{100 * ref['geoplan_success_cadaver']:.0f} %")


def plot_plan_bench(r: dict[str, Any], path: Path) -> Path:
    """Per level: success rate with its 95 % interval per method, and each path's clearance to the true wall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(r["levels"])
    fig, axes = plt.subplots(len(levels), 2, figsize=(13, 3.8 * len(levels)), squeeze=False)
    colours = {"ours": "tab:red", "ours_transfer": "salmon", "init_transfer": "0.55", "geoplan": "tab:blue", "model_floor": "tab:olive",
               "ceiling": "tab:green"}
    radius = 0.5 * r["plan_settings"]["cannula_diameter_mm"]
    for row, level in enumerate(levels):
        per = r["levels"][level]
        ax = axes[row, 0]
        x = np.arange(len(METHODS))
        for off, set_name, hatch in ((-0.2, "ap_lat", "//"), (0.2, "random", "")):
            s = [per[set_name][m]["summary"] for m in METHODS]
            rate = np.array([100 * (v["success_rate"] or 0) for v in s])
            ci = np.array([[100 * v["success_ci95"][0], 100 * v["success_ci95"][1]] for v in s])
            ax.bar(x + off, rate, 0.38, color=[colours[m] for m in METHODS], hatch=hatch, edgecolor="k",
                   label="AP+LAT" if set_name == "ap_lat" else f"{r['random_pairs']} random pairs")
            ax.errorbar(x + off, rate, yerr=[rate - ci[:, 0], ci[:, 1] - rate], fmt="none", ecolor="k", capsize=3)
        ax.set_xticks(x, [m.replace("_", "\n") for m in METHODS], fontsize=8)
        ax.set_ylabel("both paths safe in the true bone (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"{level}, model {per.get('model', '?')}: success, 95 % interval")
        ax.legend(fontsize=7)
        ax = axes[row, 1]
        data = [[p["clearance_mm"] for c in per["random"][m]["cases"] + per["ap_lat"][m]["cases"] for p in c["paths"].values()
                 if "clearance_mm" in p] for m in METHODS]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=[m.replace("_", "\n") for m in METHODS])
        for i, d in enumerate(data):
            ax.scatter(np.full(len(d), i + 1) + np.random.default_rng(i).uniform(-0.15, 0.15, len(d)), d, s=8, color=colours[METHODS[i]])
        ax.axhline(radius, color="k", ls="--", lw=0.8)
        lowest = min((v for d in data for v in d), default=0.0)
        ax.set_ylim(max(lowest - 0.5, -6.0), None)
        ax.set_ylabel("clearance to the true cortex (mm)")
        ax.set_title(f"{level}: each path's clearance in the true bone (axis cut at -6 mm); dashed: cannula radius", fontsize=9)
    around = r.get("surroundings", "ct")
    fig.suptitle(f"twinsim bench plan: clicks {r['click_sigma_mm']:g} mm" + ("" if around == "ct" else f"; surroundings: {around} (ablation)"))
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    return path


def format_curve(curve: list[dict[str, Any]]) -> str:
    rows = [[c["level"], c["views"], c["clinician"], f"{c['click_sigma_mm']:g}",
             f"{_pct(c['success_rate'])} % [{_pct(c['success_ci95'][0])}-{_pct(c['success_ci95'][1])}]",
             f"{c['accepted_but_unsafe']} ({c['accepted_but_unsafe_medial']})", f"{c['paths_refused']}",
             f"{c['mistakes_made']} / {c['input_corrected']} / {c['input_refused']}"] for c in curve]
    return table(["level", "views", "clinician", "clicks mm", "ours: success [95% CI]", "given, unsafe (medial)",
                  "paths refused", "mistakes / corrected / refused input"], rows) + \
        ("\nours (reconstruction + planner) at each click noise; 'given, unsafe': paths handed on as safe that breach the "
         "true bone, of 2 per case; input refused: the clicks' consistency check stopped the case before the fit")


def curve_of(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for sigma, r in runs.items():
        for level, views, _, s in iter_summaries(r, ("ours",)):
            out.append({"level": level, "views": views, "clinician": r["clinician"]["kind"], "click_sigma_mm": float(sigma), **s})
    return out


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (level, views), marker in zip(sorted({(c["level"], c["views"]) for c in curve}), "osd^v<>p*", strict=False):
        pts = sorted((c for c in curve if (c["level"], c["views"]) == (level, views)), key=lambda c: c["click_sigma_mm"])
        x = [c["click_sigma_mm"] for c in pts]
        rate = np.array([100 * (c["success_rate"] or 0.0) for c in pts])
        lo = np.array([100 * c["success_ci95"][0] for c in pts])
        hi = np.array([100 * c["success_ci95"][1] for c in pts])
        axes[0].errorbar(x, rate, yerr=[rate - lo, hi - rate], marker=marker, capsize=3, label=f"{level}, {views}")
        axes[1].plot(x, [c["accepted_but_unsafe"] / max(2 * c["cases"], 1) * 100 for c in pts], marker=marker,
                     label=f"{level}, {views}")
    axes[0].set(xlabel="click noise at the vertebra (mm SD)", ylabel="both paths safe in the true bone (%)", ylim=(0, 105),
                title="success, 95 % interval")
    worst = max((c["accepted_but_unsafe"] / max(2 * c["cases"], 1) * 100 for c in curve), default=0.0)
    axes[1].set(xlabel="click noise at the vertebra (mm SD)", ylabel="paths given as safe, unsafe in truth (% of paths)",
                title="given, unsafe", ylim=(0, max(5.0, 1.2 * worst)))
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return write_figure(fig, path, dpi=100)


def main(ct_path: Path, labels_path: Path, label_table: str | None, levels: list[str], out: Path, n_random: int, seed: int,
         case_dir: Path | None = None, click_sigmas_mm: tuple[float, ...] = (1.0,), reuse_cases: bool = False,
         settings: PlanSettings | None = None, surroundings: str = "ct", clinician: Clinician | None = None,
         runner: RunnerSettings | None = None) -> int:
    clinician = clinician or Clinician()
    runner = runner or RunnerSettings()
    sigmas = ", ".join(f"{s:g}" for s in click_sigmas_mm)
    print(f"twinsim bench plan: {', '.join(levels)}; AP+LAT and {n_random} random view pairs; clicks {sigmas} mm, "
          f"{clinician.kind} clinician; surroundings {surroundings}; {runner.describe()}")
    header = {"reference_seed000": SEED000, "targets": TARGETS, "reused_cases": reuse_cases, "patient": {"ct": ct_path.name, "labels": labels_path.name},
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch_threads_per_case": CASE_THREADS}}
    one = len(click_sigmas_mm) == 1
    runs: dict[str, dict[str, Any]] = {}
    for sigma in click_sigmas_mm:
        path = out if one else out.with_name(f"{out.stem}_{sigma:g}mm{out.suffix}")
        cases = case_dir if one or case_dir is None else case_dir / f"clicks_{sigma:g}mm"
        rs = runner if one or runner.records is None else replace(runner, records=runner.records / f"clicks_{sigma:g}mm")

        def save(partial: dict[str, Any], path: Path = path) -> None:
            write_json(path, {**partial, **header, "complete": list(partial["levels"]) == levels})

        r = {**run_plan_bench(ct_path, labels_path, label_table, levels, n_random=n_random, seed=seed, click_sigma_mm=sigma,
                              case_dir=cases, reuse_cases=reuse_cases, settings=settings, on_level=save,
                              surroundings=surroundings, clinician=clinician, runner=rs), **header}
        runs[f"{sigma:g}"] = r
        print(format_plan_bench(r))
        print(f"wrote {plot_plan_bench(r, path.with_suffix('.png'))}")
        print(f"wrote {path}" + (f"; cases (images, sidecars, clicks.json, reconstruction JSON) in {cases}" if cases else ""))
    if not one:
        curve = curve_of(runs)
        write_json(out, {"curve": curve, "runs": {s: out.with_name(f"{out.stem}_{s}mm{out.suffix}").name for s in runs},
                         "clinician": asdict(clinician), **header})
        print(format_curve(curve))
        print(f"wrote {plot_curve(curve, out.with_suffix('.png'), f'twinsim bench plan: {clinician.kind} clinician')}")
        print(f"wrote {out}")
    return 0
