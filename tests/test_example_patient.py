"""The example patient (real chest CT): vertebrae found, anatomical volumes, watertight meshes, cache."""

from pathlib import Path

import numpy as np
import pytest

from twinsim.anatomy.ct import PatientDataError
from twinsim.anatomy.patient import build_patient

THORACOLUMBAR = [f"T{i}" for i in range(1, 13)] + ["L1"]


def test_complete_and_cut_vertebrae(example_patient_model):
    p = example_patient_model
    assert p.levels == THORACOLUMBAR
    assert {"L2", "L3", "C7"} <= set(p.cut_levels)
    assert "inferior" in p.cut_levels["L2"]


def test_vertebra_volumes_in_anatomical_range(example_patient_model):
    vols = {lvl: m.volume_mm3 / 1000.0 for lvl, m in example_patient_model.vertebrae.items()}
    assert 30.0 < vols["L1"] < 90.0
    for lvl in THORACOLUMBAR:
        assert 10.0 < vols[lvl] < 90.0, (lvl, vols[lvl])
    # Vertebrae grow caudally: the lower thoracic and L1 are larger than the upper thoracic.
    assert vols["L1"] > vols["T12"] > vols["T6"] > vols["T2"] * 0.9


def test_meshes_are_watertight_and_sized(example_patient_model):
    for lvl, m in example_patient_model.vertebrae.items():
        assert m.is_watertight, lvl
        assert 1000 < m.n_vertices <= 5000, lvl
    skin = example_patient_model.skin
    assert skin.is_closed  # a closed surface; a fold of the smoothing is allowed there (see anatomy.patient)
    # A chest section of ~33 cm: tens of litres, not a table or a blanket.
    assert 10.0 < skin.volume_mm3 / 1e6 < 40.0


def test_vertebrae_lie_inside_the_skin(example_patient_model):
    import open3d as o3d

    scene = example_patient_model.skin.raycasting_scene()
    for lvl, m in example_patient_model.vertebrae.items():
        occ = scene.compute_occupancy(o3d.core.Tensor(m.vertices_mm.astype(np.float32))).numpy()
        assert occ.mean() > 0.99, lvl


def test_cache_hit_returns_the_same_meshes(example, example_patient_model):
    from conftest import _SESSION_CACHE

    again = build_patient(example.ct, example.labels, example.label_table,
                          cache_dir=Path(_SESSION_CACHE) / "patients", progress=False)
    # The run's cache starts empty (conftest), so one worker meshed the CT this run; this build reads its result.
    assert again.from_cache and Path(_SESSION_CACHE).name.startswith("twinsim-test-cache-")
    assert again.content_key == example_patient_model.content_key
    assert np.array_equal(again.vertebra("L1").vertices_mm, example_patient_model.vertebra("L1").vertices_mm)
    with pytest.raises(PatientDataError, match="L2 is cut"):
        build_patient(example.ct, example.labels, example.label_table, require_levels=["L2"],
                      cache_dir=Path(_SESSION_CACHE) / "patients", progress=False)
