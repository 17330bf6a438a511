"""Simulated C-arm: geometry, DRRs, ground-truth masks, files, views."""

import json

import numpy as np
import pytest
from PIL import Image

from twinsim import frames
from twinsim.evaluation.xray_truth import vertebra_projection, weighted_centroid_px
from twinsim.imaging.acquisition import Acquisition, AcquisitionError, load_acquisition
from twinsim.imaging.drr import DetectorModel
from twinsim.imaging.projection import GeometryError, ProjectionGeometry
from twinsim.imaging.views import NAMED_VIEWS, View, parse_view, sample_view_pairs
from twinsim.sim.carm_imaging import T_world_ct_mm, carm_projection

SIZE = (256, 256)


def _views():
    (a, _), = sample_view_pairs(1, seed=7)
    return [NAMED_VIEWS["AP"], NAMED_VIEWS["LAT"], a]  # the two standard views and a random oblique one


@pytest.mark.parametrize("view", _views(), ids=lambda v: v.name)
def test_vertebra_centroids_project_onto_their_drr_masks(room, example_ct, example_patient_model, view):
    """The 3D centroid of complete vertebrae in view (up to three, the suite's time) projects within 1 px of its
    projected label."""
    room.set_carm_angles(view.lao_deg, view.cranial_deg)
    try:
        geom = carm_projection(room, SIZE, "ct")
        checked = 0
        for level in example_patient_model.levels:
            if checked == 3:
                break
            chord = vertebra_projection(example_ct, level, geom, weight="length")
            if not chord.any():
                continue  # off the detector in this view
            if chord[[0, -1], :].any() or chord[:, [0, -1]].any():
                continue  # cut by the detector's edge: its projection is incomplete
            idx = np.argwhere(example_ct.vertebra_mask(level)).mean(axis=0)
            c3 = frames.transform_points(example_ct.affine_mm, idx)
            proj = geom.project(c3[None])[0]
            assert np.linalg.norm(weighted_centroid_px(chord) - proj) < 1.0, level
            # Weighting each ray by the bone volume its frustum holds removes most of the
            # perspective bias, so a half-pixel convention error would show here.
            vol = vertebra_projection(example_ct, level, geom, weight="volume")
            assert np.linalg.norm(weighted_centroid_px(vol) - proj) < 0.4, level
            checked += 1
        assert checked >= 2
    finally:
        room.set_carm_angles(room.config.carm.lao_deg, room.config.carm.cranial_deg)


@pytest.mark.parametrize("lao,cran", [(0, 0), (90, 0), (-35, 12), (60, -18)])
def test_drr_geometry_and_pybullet_carm_agree(room, lao, cran):
    room.set_carm_angles(lao, cran)
    try:
        geom_w = carm_projection(room, SIZE, "world")  # mm
        src = room.carm_frame_pose("source")  # m, from PyBullet's link state
        det = room.carm_frame_pose("detector")
        assert np.abs(geom_w.source_mm * 1e-3 - src[:3, 3]).max() < 1e-6
        assert np.abs(geom_w.detector_center_mm * 1e-3 - det[:3, 3]).max() < 1e-6
        corners = geom_w.detector_points_mm(np.array([[0, 0], [SIZE[0], 0], [0, SIZE[1]], [SIZE[0], SIZE[1]]])) * 1e-3
        assert np.abs((corners - det[:3, 3]) @ det[:3, 2]).max() < 1e-6  # all on PyBullet's detector plane
        # The ct-frame geometry is the same acquisition.
        geom_ct = carm_projection(room, SIZE, "ct")
        assert np.allclose(geom_ct.in_frame(T_world_ct_mm(room), "world").P, geom_w.P, rtol=1e-9, atol=1e-6)
    finally:
        room.set_carm_angles(room.config.carm.lao_deg, room.config.carm.cranial_deg)


def test_projection_matrix_basics():
    T = frames.make_transform(frames.rotation_about_axis([1, 2, 3], 0.7), [10.0, -20.0, 300.0])
    g = ProjectionGeometry(1000.0, 200, 100, (1.5, 1.5), T)
    uv = np.array([[0.5, 0.5], [100.0, 50.0], [199.5, 99.5]])
    assert np.allclose(g.project(g.detector_points_mm(uv)), uv, atol=1e-9)
    assert np.allclose(g.project(g.detector_center_mm[None]), [[100.0, 50.0]])
    assert np.allclose(g.K, [[1000 / 1.5, 0, 100], [0, 1000 / 1.5, 50], [0, 0, 1]])
    with pytest.raises(GeometryError, match="behind the X-ray source"):
        g.project(frames.transform_points(T, [[0.0, 0.0, -10.0]]))
    with pytest.raises(GeometryError, match="positive"):
        ProjectionGeometry(1000.0, 0, 100, (1.5, 1.5), T)
    band = g.rows(30, 60)
    assert np.allclose(band.project(g.detector_points_mm(np.array([[10.0, 45.0]]))), [[10.0, 15.0]])


def test_drr_shows_bone_and_noise_is_seeded(room, drr_renderer, example_ct):
    room.set_carm_angles(0, 0)
    geom = carm_projection(room, SIZE, "ct")
    L = drr_renderer.line_integrals(geom)
    mask = vertebra_projection(example_ct, "L1", geom) > 5.0  # rays through > 5 mm of L1
    ring = (vertebra_projection(example_ct, "L1", geom) == 0)
    assert L[mask].mean() > L[ring & (L > 0.1 * L.max())].mean()  # bone attenuates more than its surroundings
    clean, win = drr_renderer.render(geom, DetectorModel(), seed=0)
    a, _ = drr_renderer.render(geom, DetectorModel.realistic(), seed=1)
    b, _ = drr_renderer.render(geom, DetectorModel.realistic(), seed=1)
    c, _ = drr_renderer.render(geom, DetectorModel.realistic(), seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert clean.min() >= 0 and clean.max() <= 1 and win[1] > win[0]
    assert np.std(a - clean) > 0.005


def test_acquisition_round_trip_is_exact(tmp_path, room, drr_renderer):
    from twinsim.sim.carm_imaging import acquire

    acq, hits = acquire(room, drr_renderer, NAMED_VIEWS["LAO30"], SIZE, DetectorModel.realistic(), seed=3)
    room.set_carm_angles(0, 0)
    assert not hits
    png, js = acq.save(tmp_path, "LAO30")
    back = load_acquisition(png)
    assert np.array_equal(back.geometry.P, acq.geometry.P)
    assert np.array_equal(back.geometry.K, acq.geometry.K)
    assert np.abs(back.image - acq.image).max() <= 0.5 / 65535 + 1e-7
    assert back.window == acq.window and back.view["name"] == "LAO30"
    assert np.asarray(Image.open(png)).dtype == np.uint16
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def _saved(tmp_path):
    T = frames.make_transform(frames.rotation_about_axis([0, 1, 0], 0.3), [5.0, 6.0, -600.0])
    g = ProjectionGeometry(1020.0, 64, 48, (4.6875, 6.25), T)
    acq = Acquisition(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64), g, (0.0, 4.0))
    return acq.save(tmp_path, "img")


def _edit_sidecar(tmp_path, edit):
    png, js = _saved(tmp_path)
    d = json.loads(js.read_text())
    edit(d)
    js.write_text(json.dumps(d))
    return png


def test_missing_sidecar(tmp_path):
    png, js = _saved(tmp_path)
    js.unlink()
    with pytest.raises(AcquisitionError, match="geometry sidecar not found"):
        load_acquisition(png)


def test_incomplete_sidecar(tmp_path):
    png = _edit_sidecar(tmp_path, lambda d: [d.pop("projection_matrix"), d.pop("sdd_mm")])
    with pytest.raises(AcquisitionError, match="incomplete: missing sdd_mm, projection_matrix"):
        load_acquisition(png)


def test_sidecar_inconsistent_with_image_size(tmp_path):
    png = _edit_sidecar(tmp_path, lambda d: d.update(width_px=128))
    with pytest.raises(AcquisitionError, match="is 64x48 px but its sidecar says 128x48"):
        load_acquisition(png)


def test_sidecar_inconsistent_matrices(tmp_path):
    png = _edit_sidecar(tmp_path, lambda d: d["projection_matrix"][0].__setitem__(3, d["projection_matrix"][0][3] + 50.0))
    with pytest.raises(AcquisitionError, match="projection_matrix is not intrinsics"):
        load_acquisition(png)
    png = _edit_sidecar(tmp_path, lambda d: d["intrinsics"][0].__setitem__(0, d["intrinsics"][0][0] * 1.01))
    with pytest.raises(AcquisitionError, match="intrinsics do not follow"):
        load_acquisition(png)


def test_views_named_custom_and_random():
    assert parse_view("lat") == NAMED_VIEWS["LAT"]
    assert parse_view("RAO40CAUD10") == View("RAO40CAUD10", -40.0, -10.0)
    assert parse_view("15,-5").lao_deg == 15.0
    with pytest.raises(ValueError, match="unknown view"):
        parse_view("sideways")
    assert NAMED_VIEWS["AP"].beam_angle_to_deg(NAMED_VIEWS["LAT"]) == pytest.approx(90.0)
    pairs = sample_view_pairs(50, seed=3)
    assert pairs == sample_view_pairs(50, seed=3)
    assert pairs != sample_view_pairs(50, seed=4)
    for a, b in pairs:
        assert a.beam_angle_to_deg(b) >= 30.0
        for v in (a, b):
            assert -90 <= v.lao_deg <= 90 and -20 <= v.cranial_deg <= 20
    with pytest.raises(ValueError, match="could not find"):
        sample_view_pairs(1, lao_range_deg=(0, 1), cranial_range_deg=(0, 1), max_tries=100)


@pytest.mark.slow
def test_independent_renderer_agrees_on_geometry(example, example_ct, drr_renderer):
    """diffdrr's Siddon renderer, given our geometry, draws the same picture (a mirrored one would not)."""
    from twinsim.bench.xray import DiffDRRReference, bench_geometry

    geom = bench_geometry(example_ct, "L1", 64)
    ref = DiffDRRReference(example.ct, example.labels).render(geom)
    assert np.corrcoef(drr_renderer.line_integrals(geom).ravel(), ref.ravel())[0, 1] > 0.99


@pytest.mark.slow
def test_cli_xray_writes_images_sidecars_and_contact_sheet(tmp_path, example_patient_model):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "xray", "--views", "AP,RAO30",
                          "--size", "256", "--samples", "128", "-o", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for stem in ("AP", "RAO30"):
        acq = load_acquisition(tmp_path / f"{stem}.png")
        assert acq.image.shape == (256, 256) and acq.image.std() > 0.05
    sheet = np.asarray(Image.open(tmp_path / "contact_sheet.png").convert("RGB")).astype(int)
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 60) & (sheet[..., 2] < 60)
    assert red.sum() > 200  # the target's outline is drawn
    bad = subprocess.run([sys.executable, "-m", "twinsim.cli", "xray", "--views", "sideways", "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown view" in bad.stderr and "Traceback" not in bad.stderr
    assert acq.meta["geometry"].startswith("the DRR's own") and acq.geometry.frame == "ct"  # labelled as what it is
    # Tracked geometry needs a C-arm calibration: a calibration file without one is refused before any device opens.
    import json

    from twinsim.hal.rig import HARDWARE_DIR

    cal = json.loads((HARDWARE_DIR / "sim" / "calibration.json").read_text())
    cal.pop("carm", None)
    (tmp_path / "no_carm.json").write_text(json.dumps(cal))
    bad = subprocess.run([sys.executable, "-m", "twinsim.cli", "xray", "--geometry", "tracked", "--calibration",
                          str(tmp_path / "no_carm.json"), "-o", str(tmp_path / "t")], capture_output=True, text=True)
    assert bad.returncode == 2 and "twinsim calibrate carm" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "t").exists()
