"""``twinsim bench recon``: vertebra reconstruction from two simulated X-rays, against the CT's labels.

For each level: DRRs of the patient CT (realistic detector) at AP + LAT and at seeded random
view pairs, clicks from a simulated clinician (evaluation code: model fitted to the true
surface, projected, 1 mm noise), then three methods from the same clicks: ours (NCC + multi-
scale gradient NCC), the NCC-only baseline (same initialization, renderer and optimizer), and
the initialization alone. Metrics against the label map: DICE on the CT grid, NSD at 1/2 mm,
HD95, mean surface distance; seconds per vertebra (median); failures (an error, or DICE < 0.5).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.anatomy.ct import load_ct
from twinsim.anatomy.patient import build_patient
from twinsim.anatomy.wheel_data import content_digest
from twinsim.bench.runner import CASE_THREADS, RunnerSettings, run_cases, session
from twinsim.evaluation.recon_metrics import evaluate
from twinsim.evaluation.simulated_clicks import DEFAULT_CLICK_SIGMA_MM, simulate_clicks, true_landmarks_mm
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.carm_geometry import CArmGeometry, PatientAxes, carm_pose
from twinsim.imaging.drr import DetectorModel, DRRRenderer
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.imaging.views import NAMED_VIEWS, View, sample_view_pairs
from twinsim.recon.consistency import checked_initial_pose
from twinsim.recon.fit import FitSettings, default_model_name, reconstruct
from twinsim.recon.similarity import GradientNCCLoss, NCCLoss
from twinsim.report import num, table, write_figure, write_json
from twinsim.shape.model import ShapeModel, load_model
from twinsim.shape.regions import MODEL_LEVELS

METHODS = ("ours", "ncc_baseline", "init_only")
FAILURE_DICE = 0.5
TARGETS = {"ap_lat": {"dice_min": 0.80, "hd95_max_mm": 5.0}, "random": {"dice_min": 0.78}, "seconds_max": 10.0}
SEED000 = {"ap_lat": {"dice": 0.746, "nsd": 0.608, "hd95_mm": 6.34}, "random": {"dice": 0.726}, "ncc_baseline_dice": 0.650,
           "reverter_dice": 0.769}


def view_geometry(centre_mm: np.ndarray, view: View, size_px: int = 512, carm: CArmGeometry | None = None) -> ProjectionGeometry:
    """The C-arm at ``view`` around an isocenter (ct frame, mm), as the operator centres it on the level."""
    carm = carm or CArmGeometry()
    T_ct_carm = carm_pose(centre_mm, PatientAxes.from_T_world_ct(np.eye(4)), view.lao_deg, view.cranial_deg)
    return ProjectionGeometry(carm.sdd_mm, size_px, size_px, carm.pixel_spacing_for((size_px, size_px)),
                              T_ct_carm @ frames.scale_translation(carm.T_carm_source, 1000.0))


def acquire(renderer: DRRRenderer, geom: ProjectionGeometry, view: View, seed: int) -> Acquisition:
    image, window = renderer.render(geom, DetectorModel.realistic(), seed)
    return Acquisition(image, geom, window, view={"name": view.name, "lao_deg": view.lao_deg, "cranial_deg": view.cranial_deg},
                       meta={"source": "twinsim DRR (nanodrr)", "seed": seed})


def summarize_cases(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r.get("dice") is not None and r["dice"] >= FAILURE_DICE]
    out: dict[str, Any] = {"cases": len(rows), "failures": len(rows) - len(ok)}
    for k in ("dice", "nsd_1mm", "nsd_2mm", "hd95_mm", "msd_mm"):
        out[k] = float(np.mean([r[k] for r in ok])) if ok else None
    out["seconds_median"] = float(statistics.median(r["seconds"] for r in rows)) if rows else None
    return out


def _run_case(model: ShapeModel, acqs: list[Acquisition], clicks: Any, settings: FitSettings, case: dict[str, Any],
              truth: Any, mask: np.ndarray, affine_mm: np.ndarray, with_baseline: bool = True) -> dict[str, dict[str, Any]]:
    """Initialization, ours and (``with_baseline``) the NCC baseline on one case with one model; a row per method."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        t = time.perf_counter()
        init = checked_initial_pose(model, acqs, clicks, settings.click_sigma_mm)
        init_s = time.perf_counter() - t
    except ValueError as exc:
        return {m: {**case, "error": str(exc), "dice": None, "seconds": 0.0} for m in METHODS}
    init_mesh = None
    for m, loss in (("ours", GradientNCCLoss()), ("ncc_baseline", NCCLoss()))[: 2 if with_baseline else 1]:
        try:
            r = reconstruct(model, acqs, clicks, settings, loss=loss, init=init)
        except ValueError as exc:
            rows[m] = {**case, "error": str(exc), "dice": None, "seconds": 0.0}
            continue
        rows[m] = {**case, **evaluate(r.mesh(), truth, mask, affine_mm), "seconds": r.wall_s + init_s,
                   "runs": r.runs, "loss": r.loss, "initial_loss": r.initial_loss, "landmark_rms_sigma": r.landmark_rms_sigma}
        init_mesh = r.initial_mesh()
    if init_mesh is not None:
        rows["init_only"] = {**case, **evaluate(init_mesh, truth, mask, affine_mm), "seconds": init_s}
    return rows


def _recon_state(ctx: dict[str, Any]) -> SimpleNamespace:
    """A worker's state for one level: the CT and its label mask, the true mesh, the renderer and the models."""
    level = ctx["level"]
    ct = load_ct(Path(ctx["ct"]), Path(ctx["labels"]), ctx["label_table"])
    patient = build_patient(Path(ctx["ct"]), Path(ctx["labels"]), ctx["label_table"], require_levels=[level], progress=False)
    return SimpleNamespace(ctx=ctx, ct=ct, truth=patient.vertebra(level), mask=ct.vertebra_mask(level, require_complete=False),
                           renderer=DRRRenderer(ct), models={name: load_model(name) for name in ctx["models"]})


def recon_case(st: SimpleNamespace, spec: dict[str, Any]) -> dict[str, Any]:
    """One view pair: rendered and clicked once, reconstructed with each model; ``{model: {method: row}}``."""
    ctx = st.ctx
    own, level = ctx["models"][0], ctx["level"]
    va, vb = (View(*v) for v in spec["views"])
    case_seed = spec["case_seed"]
    acqs = [acquire(st.renderer, view_geometry(st.truth.centroid_mm, v, ctx["size_px"]), v, case_seed + j)
            for j, v in enumerate((va, vb))]
    # Each model is clicked as it would be used alone: its own landmarks located on the true bone (the model fitted to
    # it, by the driver), the same click noise. Landmarks located with one model and fitted with another put the
    # reference model's initialization off by its definitions, not by its shape.
    clicks = {name: simulate_clicks([a.geometry for a in acqs], ctx["_truth_landmarks"][name],
                                    ctx["click_sigma_mm"], seed=case_seed) for name in ctx["models"]}
    if spec.get("_folder"):
        folder = Path(spec["_folder"])
        for a, v in zip(acqs, (va, vb), strict=True):
            a.save(folder, v.name)
        clicks[own].images = [f"{va.name}.png", f"{vb.name}.png"]
        clicks[own].level = level
        clicks[own].save(folder / "clicks.json")
    case = {"views": [va.name, vb.name], "angles_deg": [[va.lao_deg, va.cranial_deg], [vb.lao_deg, vb.cranial_deg]],
            "separation_deg": va.beam_angle_to_deg(vb)}
    # The reference model gets ours and its initialization only: the comparison is of models.
    return {name: _run_case(model, acqs, clicks[name], ctx["settings"], case, st.truth, st.mask, st.ct.affine_mm,
                            with_baseline=name == own) for name, model in st.models.items()}


def run_recon_bench(ct_path: Path, labels_path: Path, label_table: str | None, levels: list[str], n_random: int = 20,
                    seed: int = 0, size_px: int = 512, click_sigma_mm: float = DEFAULT_CLICK_SIGMA_MM,
                    settings: FitSettings | None = None, progress: bool | None = None, case_dir: Path | None = None,
                    on_level: Callable[[dict[str, Any]], None] | None = None, reference_model: str | None = "L1",
                    runner: RunnerSettings | None = None) -> dict[str, Any]:
    """All levels' results; ``on_level`` gets the results so far after each level (a long run keeps what it has).

    A level whose own model is not ``reference_model`` is also reconstructed with the reference, from the
    same images and click noise (rows "T12 (L1 model)"): what the regional model adds, measured in one run.
    ``runner``: serial in this process (default) or Ray workers (:mod:`twinsim.bench.runner`); the records are the same."""
    # The fitter knows the click error's size (a property of the clinician or detector, not ground truth);
    # 0 mm clicks still get a 0.25 mm SD so that the landmark term stays finite.
    settings = settings or FitSettings(click_sigma_mm=max(click_sigma_mm, 0.25))
    runner = runner or RunnerSettings(progress=progress)
    patient = build_patient(ct_path, labels_path, label_table, require_levels=levels, progress=None)
    files = content_digest([Path(ct_path), Path(labels_path), Path(label_table) if label_table else None])
    results: dict[str, Any] = {"levels": {}, "settings": settings.__dict__, "click_sigma_mm": click_sigma_mm,
                               "image_px": size_px, "seed": seed, "random_pairs": n_random, "runner": []}
    pairs = {"ap_lat": [(NAMED_VIEWS["AP"], NAMED_VIEWS["LAT"])], "random": sample_view_pairs(n_random, seed=seed)}
    with session(runner, warm=[__name__]):
        for level in levels:
            truth = patient.vertebra(level)
            own = default_model_name(level)
            names = [own] + ([reference_model] if reference_model and reference_model != own else [])
            models = {name: load_model(name) for name in names}
            t0 = time.perf_counter()
            landmarks = {name: true_landmarks_mm(m, truth) for name, m in models.items()}
            labels = {name: name if name == own else models[name].name + ("" if name == models[name].name else f" ({Path(name).stem})")
                      for name in names}
            keys = {name: level if name == own else f"{level} ({labels[name]} model)" for name in names}
            per_model: dict[str, dict[str, Any]] = {
                name: {"model": labels[name], "level": level, "stress": level not in MODEL_LEVELS[models[name].name],
                       "landmark_fit_s": time.perf_counter() - t0} for name in names}
            ctx = {"ct": str(ct_path), "labels": str(labels_path), "label_table": label_table, "files": files, "level": level,
                   "models": names, "settings": settings, "click_sigma_mm": click_sigma_mm, "size_px": size_px,
                   "_truth_landmarks": landmarks}
            specs, where = [], []
            for set_name, view_pairs in pairs.items():
                for k, (va, vb) in enumerate(view_pairs):
                    folder = case_dir / level if case_dir is not None and set_name == "ap_lat" else None
                    specs.append({"set": set_name, "k": k, "case_seed": seed * 1000 + 10 * k + (0 if set_name == "ap_lat" else 500),
                                  "views": [[v.name, v.lao_deg, v.cranial_deg] for v in (va, vb)],
                                  "_folder": str(folder) if folder else None})
                    where.append(set_name)
            run = run_cases("recon", recon_case, _recon_state, ctx, specs, runner,
                            desc=f"bench recon {level} ({' + '.join(names)})")
            results["runner"].append({"level": level, **run.summary()})
            rows = {set_name: {name: {m: [] for m in METHODS} for name in names} for set_name in pairs}
            for set_name, spec, res in zip(where, specs, run.results, strict=True):
                got = res.record or {name: {m: {"views": [v[0] for v in spec["views"]], "error": f"case failed twice: {res.error}",
                                                "dice": None, "seconds": 0.0} for m in METHODS} for name in names}
                for name in names:
                    for m in METHODS:
                        if m in got[name]:
                            rows[set_name][name][m].append(got[name][m])
            for name in names:
                for set_name in pairs:
                    per_model[name][set_name] = {m: {"summary": summarize_cases(rows[set_name][name][m]),
                                                     "cases": rows[set_name][name][m]} for m in METHODS}
                results["levels"][keys[name]] = per_model[name]
            if on_level is not None:
                on_level(results)
    return results


def iter_summaries(r: dict[str, Any], methods: Sequence[str]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(level label, views label, method, summary) for every row of a per-level benchmark's results."""
    for level, per in r["levels"].items():
        for set_name in ("ap_lat", "random"):
            for m in methods:
                s = per[set_name][m]["summary"]
                if not s["cases"]:
                    continue
                label = f"{per.get('level', level)}, {per['model']} model" if "model" in per else level
                yield (label + (" (stress)" if per.get("stress") else ""), "AP+LAT" if set_name == "ap_lat" else f"random x{s['cases']}", m, s)


def format_recon_bench(r: dict[str, Any]) -> str:
    rows = [[level, views, m, num(s["dice"], ".3f"), num(s["nsd_1mm"], ".3f"), num(s["nsd_2mm"], ".3f"), num(s["hd95_mm"], ".2f"),
             num(s["msd_mm"], ".2f"), num(s["seconds_median"], ".2f"), s["failures"]] for level, views, m, s in iter_summaries(r, METHODS)]
    t = table(["level", "views", "method", "DICE", "NSD 1mm", "NSD 2mm", "HD95 mm", "MSD mm", "s/vertebra", "failures"], rows)
    ref = r["reference_seed000"]
    return (t + f"\nseed 000 Spine-DART: AP/LAT DICE {ref['ap_lat']['dice']}, NSD {ref['ap_lat']['nsd']}, HD95 {ref['ap_lat']['hd95_mm']} mm; "
            f"random DICE {ref['random']['dice']}; NCC baseline {ref['ncc_baseline_dice']}; ReVerteR {ref['reverter_dice']}\n"
            "NSD is the share of surface points within 1 or 2 mm of the other surface; failures: an error or DICE < 0.5 "
            "(excluded from the means).")


def plot_recon_bench(r: dict[str, Any], path: Path) -> Path:
    """Per level: DICE and HD95 of every case against the angle between its two beams, for the three methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"ours": ("tab:red", "o"), "ncc_baseline": ("tab:blue", "s"), "init_only": ("0.45", "^")}
    levels = list(r["levels"])
    fig, axes = plt.subplots(len(levels), 2, figsize=(11, 3.6 * len(levels)), squeeze=False)
    for row, level in enumerate(levels):
        per = r["levels"][level]
        for col, (key, label, target) in enumerate((("dice", "DICE", TARGETS["random"]["dice_min"]),
                                                    ("hd95_mm", "HD95 (mm)", TARGETS["ap_lat"]["hd95_max_mm"]))):
            ax = axes[row, col]
            for m in METHODS:
                colour, marker = style[m]
                for set_name, size, edge in (("random", 28, "none"), ("ap_lat", 110, "k")):
                    cases = [c for c in per[set_name][m]["cases"] if c.get(key) is not None]
                    ax.scatter([c["separation_deg"] for c in cases], [c[key] for c in cases], s=size, c=colour, marker=marker,
                               edgecolors=edge, alpha=0.85, label=f"{m} ({'AP+LAT' if set_name == 'ap_lat' else 'random'})")
            ax.axhline(target, color="k", ls="--", lw=0.8)
            ax.set_xlabel("angle between the two beams (deg)")
            ax.set_ylabel(label)
            ax.set_title(f"{level}, model {per.get('model', '?')}: {label}, dashed: target")
            if row == 0 and col == 0:
                ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"twinsim bench recon: {r['random_pairs']} random view pairs + AP/LAT (large markers), "
                 f"clicks {r['click_sigma_mm']:g} mm")
    fig.tight_layout()
    write_figure(fig, path, dpi=100)
    return path


def main(ct_path: Path, labels_path: Path, label_table: str | None, levels: list[str], out: Path, n_random: int, seed: int,
         case_dir: Path | None = None, click_sigma_mm: float = DEFAULT_CLICK_SIGMA_MM, reference_model: str | None = "L1",
         runner: RunnerSettings | None = None) -> int:
    runner = runner or RunnerSettings()
    build_patient(ct_path, labels_path, label_table, require_levels=levels, progress=None)  # the levels' check, the mesh cache
    print(f"twinsim bench recon: {', '.join(levels)}; AP+LAT and {n_random} random view pairs; clicks {click_sigma_mm:g} mm; "
          f"{runner.describe()}, torch threads {CASE_THREADS} per case")
    header = {"reference_seed000": SEED000, "targets": TARGETS, "patient": {"ct": ct_path.name, "labels": labels_path.name},
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch_threads_per_case": CASE_THREADS}}

    def save(partial: dict[str, Any]) -> None:
        write_json(out, {**partial, **header, "complete": list(partial["levels"]) == levels})

    r = {**run_recon_bench(ct_path, labels_path, label_table, levels, n_random=n_random, seed=seed,
                           click_sigma_mm=click_sigma_mm, case_dir=case_dir, on_level=save,
                           reference_model=reference_model, runner=runner), **header}
    print(format_recon_bench(r))
    print(f"wrote {plot_recon_bench(r, out.with_suffix('.png'))}")
    print(f"wrote {out}" + (f"; AP+LAT case files (images, sidecars, clicks.json) in {case_dir}" if case_dir else ""))
    return 0
