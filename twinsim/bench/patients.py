"""``twinsim bench patients``: the procedure on every patient and target of a suite, scored in the true anatomy.

Evaluation code. For each patient of the suite file (``scenarios/patients/suite.yaml`` by default)
and each of its targets: the default room with only its patient swapped (what a user who brings a
CT writes), calibrated for that patient, then ``bench rehearse``'s seeded cases (random view pairs
the room allows, clicks of ``click_sigma_mm``); a patient whose CT holds no room (``procedure:
plan``) runs ``bench plan``'s reconstruction and planning instead. A target that cannot be done
(cut by the field of view, absent) is recorded as refused with the loader's message. Figures per
patient and target: cases stopped before planning, success (both guides placed and breach-free in
the true bone), success among the cases whose plan was safe in the true bone (what the procedure
loses around a good plan), motions sent without a passed check, tip and axis errors.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinsim.bench.patient_suite import DEFAULT_SUITE, SuiteError, SuitePatient, load_suite, scene_for
from twinsim.bench.plan import wilson_interval
from twinsim.bench.runner import RunnerSettings, session
from twinsim.evaluation.realistic_clicks import Clinician
from twinsim.report import num, table, write_figure, write_json

if TYPE_CHECKING:
    from twinsim.recon.fit import FitSettings

PRE_PLAN = ("rig", "calibration", "x-rays", "landmarks", "reconstruction")


def _plan_settings(entry: SuitePatient, target: str) -> Any:
    from twinsim.planning.settings import PlanSettings

    return PlanSettings(cannula_diameter_mm=entry.cannula_mm[target]) if target in entry.cannula_mm else PlanSettings()


def _rehearse_row(entry: SuitePatient, target: str, files: tuple[Path, Path, Path | None], n_pairs: int, seed: int,
                  sigma: float, case_dir: Path, base_scene: Path, progress: bool | None,
                  clinician: Clinician | None = None, runner: RunnerSettings | None = None) -> dict[str, Any]:
    from twinsim.bench.rehearse import run_rehearse_bench

    scene = scene_for(base_scene, *files, target, case_dir / "scene.yaml")
    try:
        r = run_rehearse_bench(str(scene), n_pairs, seed, (sigma,), with_geoplan=False, out_dir=case_dir, progress=progress,
                               plan=_plan_settings(entry, target), clinician=clinician, runner=runner)
    except Exception as exc:  # the room, its calibration or the sampler refused this patient: a stop before planning
        return {"status": "stopped before any case", "reason": f"{type(exc).__name__}: {exc}", "cases": []}
    cases = next(iter(r["cases"].values()))
    return {"status": "ran", "cases": cases, "refused_pairs": r["refused_pairs"],
            "check_200_waypoints_ms": r["collision_check_200_waypoints_ms"]["median"], "runner": r["runner"]}


def _plan_row(entry: SuitePatient, target: str, files: tuple[Path, Path, Path | None], n_pairs: int, seed: int,
              sigma: float, progress: bool | None, clinician: Clinician | None = None, fit: FitSettings | None = None,
              runner: RunnerSettings | None = None) -> dict[str, Any]:
    from twinsim.bench.plan import run_plan_bench

    ct, labels, lt = files
    r = run_plan_bench(ct, labels, str(lt) if lt else None, [target], n_random=n_pairs, seed=seed, click_sigma_mm=sigma,
                       progress=progress, settings=_plan_settings(entry, target), clinician=clinician, fit_settings=fit,
                       runner=runner)
    ours = r["levels"][target]["random"]["ours"]
    cases = [{"stopped_at": "reconstruction" if c.get("error") and not c["paths"] else None, "success": c["success"],
              "given_unsafe": sum(1 for p in c["paths"].values() if p.get("accepted") is not False and not p["safe_in_truth"]),
              "error": c.get("error")} for c in ours["cases"]]
    return {"status": "ran", "cases": cases, "plan_summary": ours["summary"], "runner": r["runner"][0]}


def _for_row(runner: RunnerSettings, patient: str, target: str) -> RunnerSettings:
    """The runner for one patient and target: its records in their own folder (resumed from the same one)."""
    return replace(runner, records=runner.records / f"{patient}_{target}") if runner.records is not None else runner


def summarize_target(row: dict[str, Any]) -> dict[str, Any]:
    cases = row.get("cases", [])
    n = len(cases)
    if row["status"] != "ran":
        return {"cases": n, "stopped_before_plan": None, "successes": 0, "success_rate": None}
    k = sum(bool(c["success"]) for c in cases)
    pre = sum(1 for c in cases if c.get("stopped_at") in PRE_PLAN)
    out: dict[str, Any] = {"cases": n, "stopped_before_plan": pre, "successes": k, "success_rate": k / n if n else None,
                           "success_ci95": wilson_interval(k, n)}
    if row["procedure"] == "rehearse":
        good = [c for c in cases if len(c.get("plan_in_truth", {})) == 2 and all(p["safe_in_truth"] for p in c["plan_in_truth"].values())]
        kg = sum(bool(c["success"]) for c in good)
        tips = [v for c in cases for v in c["tip_error_mm"].values()]
        axes = [v for c in cases for v in c["axis_error_deg"].values()]
        out.update({"plan_safe_in_truth": len(good), "success_given_safe_plan": kg,
                    "success_given_safe_plan_rate": kg / len(good) if good else None,
                    "given_unsafe_paths": sum(1 for c in cases for p in c.get("plan_in_truth", {}).values()
                                              if p["given_as_safe"] and not p["safe_in_truth"]),
                    "motions_sent": sum(c["motions_sent"] for c in cases),
                    "motions_sent_without_passed_check": sum(c["motions_sent_without_passed_check"] for c in cases),
                    "tip_error_mm_median": float(np.median(tips)) if tips else None,
                    "axis_error_deg_median": float(np.median(axes)) if axes else None,
                    "not_successes": sorted({c["outcome"][:200] for c in cases if not c["success"]})})
    else:
        out.update({"given_unsafe_paths": sum(c["given_unsafe"] for c in cases),
                    "not_successes": sorted({(c.get("error") or "a path unsafe in the true bone")[:200]
                                             for c in cases if not c["success"]})})
    return out


def run_patients_bench(suite: str | Path | None = None, n_pairs: int = 5, seed: int = 0, click_sigma_mm: float = 1.0,
                       only: list[str] | None = None, out_dir: Path | None = None, progress: bool | None = None,
                       base_scene: Path | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
                       clinician: Clinician | None = None, plan_fit: FitSettings | None = None,
                       runner: RunnerSettings | None = None) -> dict[str, Any]:
    """Every patient and target of the suite; ``on_row`` gets the result so far after each (a long run keeps what it did).
    ``plan_fit``: the fit's settings on the patients planned only (default: the product's; a shorter fit is for tests).
    ``runner``: where each row's cases run (:mod:`twinsim.bench.runner`), their records in a folder per patient and target."""
    from twinsim.anatomy.ct import PatientDataError
    from twinsim.anatomy.patient import build_patient
    from twinsim.sim.scene_config import DEFAULT_SCENE

    entries = load_suite(suite)
    if only:
        unknown = sorted(set(only) - {e.name for e in entries})
        if unknown:
            raise SuiteError(f"--only: no patient named {', '.join(unknown)} in the suite; it has {', '.join(e.name for e in entries)}")
        entries = [e for e in entries if e.name in only]
    out_dir = out_dir or Path("out/bench_patients_cases")
    runner = runner or RunnerSettings(progress=progress)
    rows: list[dict[str, Any]] = []
    with session(runner, warm=["twinsim.bench.rehearse", "twinsim.bench.plan"]):
        for entry in entries:
            for target in entry.targets:
                t0 = time.perf_counter()
                row: dict[str, Any] = {"patient": entry.name, "variant": entry.describe, "target": target, "procedure": entry.procedure,
                                       "cannula_mm": _plan_settings(entry, target).cannula_diameter_mm}
                print(f"[bench patients] {entry.name} ({entry.describe}), target {target}: {entry.procedure}", flush=True)
                try:
                    files = entry.files()
                    build_patient(*files, require_levels=[target], progress=progress)
                except (PatientDataError, OSError) as exc:
                    rows.append({**row, "status": "refused", "reason": str(exc), "cases": [], "wall_s": time.perf_counter() - t0})
                    if on_row is not None:
                        on_row(_result(rows, suite, seed, n_pairs, click_sigma_mm, complete=False))
                    continue
                row["files"] = {"ct": str(files[0]), "labels": str(files[1]), "label_table": str(files[2]) if files[2] else None}
                if entry.procedure == "rehearse":
                    res = _rehearse_row(entry, target, files, n_pairs, seed, click_sigma_mm, out_dir / f"{entry.name}_{target}",
                                        base_scene or DEFAULT_SCENE, progress, clinician, _for_row(runner, entry.name, target))
                else:
                    res = _plan_row(entry, target, files, n_pairs, seed, click_sigma_mm, progress, clinician, plan_fit,
                                    _for_row(runner, entry.name, target))
                rows.append({**row, **res, "wall_s": time.perf_counter() - t0})
                if on_row is not None:
                    on_row(_result(rows, suite, seed, n_pairs, click_sigma_mm, complete=False))
    return _result(rows, suite, seed, n_pairs, click_sigma_mm, complete=True)


def _result(rows: list[dict[str, Any]], suite: str | Path | None, seed: int, n_pairs: int, click_sigma_mm: float,
            complete: bool) -> dict[str, Any]:
    for r in rows:
        r["summary"] = summarize_target(r)
    return {"benchmark": "patients", "complete": complete, "suite": str(Path(suite) if suite else DEFAULT_SUITE.name), "seed": seed, "pairs": n_pairs,
            "click_sigma_mm": click_sigma_mm, "machine": {"platform": platform.platform()}, "rows": rows,
            "note": "success: both guides placed and breach-free in the true bone (rehearse) or both paths safe in the true "
                    "bone (plan); every figure is through the rig's sensors and scored against the CT's labels"}


def format_patients_bench(r: dict[str, Any]) -> str:
    out = []
    for row in r["rows"]:
        s = row["summary"]
        if row["status"] != "ran":
            out.append([row["patient"], row["target"], row["procedure"], "-", "-", "-", row["status"], "-", "-", "-", "-"])
            continue
        lo, hi = s["success_ci95"]
        good = (f"{s['success_given_safe_plan']}/{s['plan_safe_in_truth']}" if "plan_safe_in_truth" in s else "-")
        out.append([row["patient"], row["target"], row["procedure"], f"{row.get('cannula_mm', 5):g}", s["cases"], s["stopped_before_plan"],
                    f"{s['successes']}/{s['cases']} [{100 * lo:.0f}-{100 * hi:.0f} %]", good, s["given_unsafe_paths"],
                    s.get("motions_sent_without_passed_check", "-"),
                    num(s.get("tip_error_mm_median"), ".2f") + " / " + num(s.get("axis_error_deg_median"), ".2f")])
    lines = [table(["patient", "target", "procedure", "cannula mm", "cases", "stopped before plan", "success [95 % CI]",
                    "success | plan safe in truth", "given unsafe paths", "motions unchecked", "tip mm / axis deg (median)"], out)]
    for row in r["rows"]:
        if row["status"] != "ran":
            lines.append(f"{row['patient']} {row['target']}: {row['status']}: {row.get('reason', '')[:300]}")
        for o in row["summary"].get("not_successes", []):
            lines.append(f"{row['patient']} {row['target']}: not a success: {o}")
    return "\n".join(lines)


def plot_patients_bench(r: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["rows"]
    labels = [f"{x['patient']}\n{x['target']} ({x['procedure']}, {x.get('cannula_mm', 5):g} mm)" for x in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows)) + 4, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, x in enumerate(rows):
        s = x["summary"]
        if x["status"] != "ran":
            a.text(i, 0.05, x["status"], rotation=90, ha="center", va="bottom", fontsize=8, color="0.4")
            continue
        lo, hi = s["success_ci95"]
        a.bar(i, s["success_rate"] or 0.0, color="tab:green" if (s["success_rate"] or 0) >= 0.8 else "tab:orange")
        a.errorbar(i, s["success_rate"] or 0.0, yerr=[[(s["success_rate"] or 0) - lo], [hi - (s["success_rate"] or 0)]], color="k",
                   capsize=3)
        if s.get("success_given_safe_plan_rate") is not None:
            a.plot(i, s["success_given_safe_plan_rate"], "kD", ms=6)
        tips = [v for c in x["cases"] for v in c.get("tip_error_mm", {}).values()]
        if tips:
            b.scatter(np.full(len(tips), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(tips)), tips, s=12)
    a.axhline(0.8, color="0.5", ls="--", lw=1)
    a.set_xticks(range(len(rows)), labels, fontsize=7)
    a.set_ylim(0, 1.05)
    a.set_ylabel("success (bar, 95 % CI)\ndiamond: given a plan safe in truth")
    a.set_title(f"{r['pairs']} random view pairs each, clicks {r['click_sigma_mm']:g} mm, seed {r['seed']}", fontsize=10)
    b.set_xticks(range(len(rows)), [f"{x['patient']} {x['target']}" for x in rows], fontsize=8, rotation=30, ha="right")
    b.axhline(1.5, color="0.5", ls="--", lw=1)
    b.set_ylabel("needle tip to planned target, mm")
    b.set_title("each needle, through the sensors, in the true bone", fontsize=10)
    fig.suptitle("twinsim bench patients: the procedure on CTs it was not built on")
    fig.tight_layout()
    return write_figure(fig, path)


def main(suite: str | None, out: Path, n_pairs: int, seed: int, click_sigma_mm: float, only: list[str] | None,
         clinician: Clinician | None = None, runner: RunnerSettings | None = None) -> int:
    clinician = clinician or Clinician()
    print(f"twinsim bench patients: suite {suite or DEFAULT_SUITE}; {n_pairs} random view pairs per target; clicks "
          f"{click_sigma_mm:g} mm, {clinician.kind} clinician; seed {seed}; {(runner or RunnerSettings()).describe()}", flush=True)
    r = run_patients_bench(suite, n_pairs, seed, click_sigma_mm, only, out.parent / f"{out.stem}_cases",
                           on_row=lambda partial: write_json(out, partial), clinician=clinician, runner=runner)
    r["clinician"] = asdict(clinician)
    print(format_patients_bench(r))
    print(f"wrote {plot_patients_bench(r, out.with_suffix('.png'))}")
    print(f"wrote {write_json(out, r)}")
    return 0
