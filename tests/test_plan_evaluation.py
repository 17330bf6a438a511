"""Evaluation code of planning: the 2D-GeoPlan baseline and the benchmark's statistics."""

import numpy as np
import pytest

from twinsim.bench.plan import summarize, wilson_interval
from twinsim.bench.recon import view_geometry
from twinsim.evaluation.geoplan import GeoPlanSettings, geoplan
from twinsim.imaging.views import NAMED_VIEWS, View

CENTRE = np.array([0.0, 0.0, 0.0])
# Two converging paths in RAS (x right, y anterior, z superior), posterior entries, tips in front.
IDEAL = {"left": (np.array([-22.0, -30.0, 2.0]), np.array([-4.0, 12.0, 0.0])),
         "right": (np.array([22.0, -30.0, -2.0]), np.array([4.0, 12.0, 0.0]))}


def geoms(*views: View) -> list:
    return [view_geometry(CENTRE, v, 256) for v in views]


def test_without_click_noise_oblique_views_triangulate_the_paths_exactly():
    g = geoms(View("o1", 40.0, 10.0), View("o2", -35.0, -15.0))
    out = geoplan(g, IDEAL, GeoPlanSettings(click_sigma_mm=0.0))
    for side, (e, t) in IDEAL.items():
        got = out[side]
        assert not isinstance(got, str), got
        assert np.allclose(got[0], e, atol=1e-6) and np.allclose(got[1], t, atol=1e-6)


def test_a_path_seen_end_on_cannot_be_drawn():
    # Beam along the left path (from its direction in patient axes): that path is a point in the view.
    side_view = View("along", 0.0, 0.0)
    g = geoms(side_view, NAMED_VIEWS["LAT"])
    d = IDEAL["left"][1] - IDEAL["left"][0]
    beam = g[0].beam_direction
    end_on = {"left": (IDEAL["left"][0], IDEAL["left"][0] + 40.0 * beam * np.sign(beam @ d)), "right": IDEAL["right"]}
    out = geoplan(g, end_on, GeoPlanSettings(click_sigma_mm=0.0))
    assert isinstance(out["left"], str) and "end-on" in out["left"]
    assert not isinstance(out["right"], str)


def test_overlapping_paths_in_a_lateral_view_are_swapped_by_a_coin_flip():
    # Mirror-image paths overlap exactly in a lateral view: left and right are told apart by chance.
    mirror = {"left": (np.array([-20.0, -30.0, 0.0]), np.array([-4.0, 12.0, 0.0])),
              "right": (np.array([20.0, -30.0, 0.0]), np.array([4.0, 12.0, 0.0]))}
    g = geoms(View("ob", 60.0, 0.0), NAMED_VIEWS["LAT"])
    errors = []
    for seed in range(40):
        out = geoplan(g, mirror, GeoPlanSettings(click_sigma_mm=0.0, end_on_factor=0.0), seed=seed)
        errors.append(np.linalg.norm(out["left"][0] - mirror["left"][0]))
    swapped = np.mean(np.array(errors) > 1.0)
    assert 0.25 < swapped < 0.75  # about half the time the triangulation pairs the wrong sides
    # Where the projections are apart (AP + cranial tilt: left stays left), nothing is swapped.
    g2 = geoms(NAMED_VIEWS["AP"], View("cr", 0.0, 25.0))
    for seed in range(10):
        out = geoplan(g2, mirror, GeoPlanSettings(click_sigma_mm=0.0, end_on_factor=0.0), seed=seed)
        assert np.linalg.norm(out["left"][0] - mirror["left"][0]) < 1e-6


def test_wilson_interval_and_summary():
    lo, hi = wilson_interval(20, 20)
    assert lo == pytest.approx(0.839, abs=0.002) and hi == 1.0
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.299, abs=0.002) and hi == pytest.approx(0.701, abs=0.002)
    path = {"clearance_mm": 3.0, "breach": False, "medial_breach": False, "safe_in_truth": True, "accepted": True,
            "entry_error_mm": 1.0, "target_error_mm": 2.0, "angle_error_deg": 3.0}
    bad = {**path, "clearance_mm": 1.0, "breach": True, "safe_in_truth": False}
    rows = [{"success": True, "paths": {"left": path, "right": path}, "seconds": 1.0},
            {"success": False, "paths": {"left": bad, "right": {**path, "accepted": False}}, "seconds": 3.0},
            {"success": False, "paths": {"left": {"accepted": False, "safe_in_truth": False}}, "seconds": 0.0}]
    s = summarize(rows)
    assert s["successes"] == 1 and s["cases"] == 3
    assert s["accepted_but_unsafe"] == 1 and s["breaches"] == 1 and s["paths_refused"] == 1
    assert s["paths_missing"] == 2  # one not drawn, one never produced
    assert s["clearance_median_mm"] == 3.0


def _toy_ct():
    from pathlib import Path

    from twinsim.anatomy.ct import CTVolume

    hu = np.full((6, 6, 6), -1000.0, dtype=np.float32)
    hu[1:5, 1:5, 1:5] = -80.0  # the body: fat
    hu[2, 2, 2:4] = 300.0  # L1
    hu[3, 3, 2] = 700.0  # a neighbour
    labels = np.zeros(hu.shape, dtype=np.int32)
    labels[2, 2, 2:4] = 31
    labels[3, 3, 2] = 32
    return CTVolume(hu, labels, np.eye(4), {"L1": 31, "T12": 32}, Path("ct.nii.gz"), Path("labels.nii.gz"))


def test_surroundings_keep_the_vertebra_and_replace_the_rest():
    from twinsim.evaluation.surroundings import SOFT_TISSUE_HU, with_surroundings

    ct = _toy_ct()
    l1 = ct.labels == 31
    air = with_surroundings(ct, "L1", "air")
    tissue = with_surroundings(ct, "L1", "tissue")
    assert with_surroundings(ct, "L1", "ct") is ct
    for out in (air, tissue):
        assert np.array_equal(out.hu[l1], ct.hu[l1])
    assert np.all(air.hu[~l1] == -1000.0)
    body = ct.hu > -500
    assert np.all(tissue.hu[~l1 & body] == SOFT_TISSUE_HU) and np.all(tissue.hu[~body] == -1000.0)
    assert tissue.hu[3, 3, 2] == SOFT_TISSUE_HU  # the neighbour is gone
    assert ct.hu[3, 3, 2] == 700.0  # the original CT is untouched


def test_surroundings_refuse_unknown_names_and_levels():
    from twinsim.anatomy.ct import PatientDataError
    from twinsim.evaluation.surroundings import with_surroundings

    with pytest.raises(ValueError, match="unknown surroundings 'water'"):
        with_surroundings(_toy_ct(), "L1", "water")
    with pytest.raises(PatientDataError, match="L3"):
        with_surroundings(_toy_ct(), "L3", "air")
