"""``twinsim bench recon --geometry tracked``: the reconstruction with the geometry a rig would have.

The simulated room is calibrated through the HAL (calibration chain, then the C-arm with its
bead phantom). Each X-ray is taken through the HAL; its geometry is the C-arm calibration
composed with the C-arm marker's tracked pose, in ``ref``. The same images and the same
simulated clicks are then reconstructed twice: with that tracked geometry, and with the true
geometry the DRR was rendered with (in ``ct``). The difference between the two rows is what
the tracker and the C-arm calibration cost; both are scored against the label map (the
tracked result mapped to ``ct`` through the room's true ``T_ref_ct``). Views are limited to
where the C-arm's marker is tracked (the RAO side, see ``DEFAULT_VIEWS`` of the C-arm
calibration) and the C-arm touches nothing.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from twinsim import frames
from twinsim.bench.recon import summarize_cases
from twinsim.bench.tracked_room import open_tracked_room
from twinsim.evaluation.recon_metrics import score_in_ct
from twinsim.evaluation.simulated_clicks import DEFAULT_CLICK_SIGMA_MM, simulate_clicks, true_landmarks_mm
from twinsim.hal.errors import HalError
from twinsim.hal.interfaces import CArmView
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.views import View, sample_view_pairs
from twinsim.recon.fit import FitSettings, default_model_name, reconstruct
from twinsim.report import num, table, write_json
from twinsim.shape.model import load_model

NAMED_PAIRS = ((CArmView("AP", 0.0, 0.0), CArmView("RAO 60", -60.0, 0.0)),)
TRACKED_LAO_RANGE_DEG = (-75.0, 0.0)  # where the default room's tracker sees the C-arm's marker


def _carm_view(v: View) -> CArmView:
    return CArmView(v.name, v.lao_deg, v.cranial_deg)


def run_tracked_recon_bench(scene: str | None = None, level: str | None = None, n_random: int = 10, seed: int = 0,
                            size_px: int = 512, terms: list[str] | None = None, progress: bool | None = None) -> dict[str, Any]:
    tr = open_tracked_room(scene, terms, seed=seed, size_px=size_px, progress=progress)
    try:
        level = level or tr.room.config.patient.target_level
        truth = tr.room.patient.vertebra(level)
        ct = tr.ct_volume()
        mask = ct.vertebra_mask(level, require_complete=False)
        model = load_model(default_model_name(level))
        landmarks_ct = true_landmarks_mm(model, truth)
        T_ref_ct = tr.T_ref_ct_true()
        pairs = list(NAMED_PAIRS) + [(_carm_view(a), _carm_view(b)) for a, b in
                                     sample_view_pairs(n_random, seed=seed, lao_range_deg=TRACKED_LAO_RANGE_DEG)]
        rows: dict[str, list[dict[str, Any]]] = {"tracked": [], "true": []}
        skipped = []
        for k, pair in enumerate(tqdm(pairs, desc=f"tracked recon {level}", unit="pair", disable=progress is False)):
            try:
                acqs, true_geoms = tr.xray_pair(pair)
            except HalError as exc:  # the C-arm would collide, or its marker is not seen: a rig could not take it
                skipped.append({"views": [v.name for v in pair], "why": str(exc)})
                continue
            case = {"views": [v.name for v in pair], "angles_deg": [[v.lao_deg, v.cranial_deg] for v in pair],
                    "set": "named" if k < len(NAMED_PAIRS) else "random"}
            clicks = simulate_clicks(true_geoms, landmarks_ct, DEFAULT_CLICK_SIGMA_MM, seed=seed * 1000 + k)
            settings = FitSettings(click_sigma_mm=DEFAULT_CLICK_SIGMA_MM)
            for name, images, to_ct in (("tracked", acqs, frames.invert(T_ref_ct)),
                                        ("true", [Acquisition(a.image, g, a.window, a.view) for a, g in zip(acqs, true_geoms, strict=True)],
                                         np.eye(4))):
                try:
                    t0 = time.perf_counter()
                    r = reconstruct(model, images, clicks, settings)
                except ValueError as exc:
                    rows[name].append({**case, "error": str(exc), "dice": None, "seconds": 0.0})
                    continue
                rows[name].append({**case, **score_in_ct(model.annotation_points, r.vertices_mm, r.faces, to_ct, truth, mask,
                                                         ct.affine_mm, landmarks_ct), "seconds": time.perf_counter() - t0})
        tr.room.set_carm_angles(tr.room.config.carm.lao_deg, tr.room.config.carm.cranial_deg)
        carm = tr.calibration.carm.to_dict()
        budget = sorted(tr.room.config.error_budget.terms)
    finally:
        tr.close()

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        s = summarize_cases(rs)
        ok = [r for r in rs if r.get("tre_mean_mm") is not None]
        s["tre_mean_mm"] = float(np.mean([r["tre_mean_mm"] for r in ok])) if ok else None
        return s

    return {"benchmark": "recon, tracked geometry", "level": level, "image_px": size_px, "seed": seed,
            "error_budget_terms_on": budget, "carm_calibration": carm, "skipped_pairs": skipped,
            "machine": {"platform": platform.platform()},
            "summary": {g: {s: summary([r for r in rows[g] if r["set"] == s]) for s in ("named", "random")} for g in rows},
            "cases": rows}


def format_tracked_recon_bench(r: dict[str, Any]) -> str:
    label = {"tracked": "tracked (tracker + C-arm calibration, ref)", "true": "true (the DRR's own, ct)"}
    rows = []
    for s in ("named", "random"):
        for g in ("true", "tracked"):
            m = r["summary"][g][s]
            views = "AP + RAO 60" if s == "named" else f"random x{m['cases']}"
            rows.append([r["level"], views, label[g], num(m["dice"], ".3f"), num(m["nsd_1mm"], ".3f"), num(m["hd95_mm"], ".2f"),
                         num(m["msd_mm"], ".2f"), num(m["tre_mean_mm"], ".2f"), m["failures"]])
    t = table(["level", "views", "geometry", "DICE", "NSD 1mm", "HD95 mm", "MSD mm", "TRE mm (3 landmarks)", "failures"], rows)
    skipped = f"\nskipped pairs (a rig could not take them): {len(r['skipped_pairs'])}" if r["skipped_pairs"] else ""
    return (t + f"\nthe same images and clicks, reconstructed with each geometry; error budget on: "
            f"{', '.join(r['error_budget_terms_on']) or 'none'}" + skipped)


def main(scene: str | None, out: Path, n_random: int, seed: int, level: str | None = None) -> int:
    print(f"twinsim bench recon --geometry tracked: calibration chain and C-arm calibration through the HAL, then AP + RAO 60 "
          f"and {n_random} random pairs on the RAO side")
    r = run_tracked_recon_bench(scene, level, n_random, seed)
    print(format_tracked_recon_bench(r))
    print(f"wrote {write_json(out, r)}")
    return 0
