"""Reconstruction from two X-rays: renderer, triangulation, initialization, fit, metrics, CLI."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest
import torch

from twinsim import frames
from twinsim.bench.recon import view_geometry
from twinsim.evaluation.simulated_clicks import simulate_clicks
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.landmarks_file import CLICKABLE, Clicks, LandmarksFileError, load_clicks
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.imaging.views import NAMED_VIEWS, View
from twinsim.recon import renderer as R
from twinsim.recon.camera import RoiBox, camera_for, crop_image
from twinsim.recon.fit import FitSettings, reconstruct, roi_box
from twinsim.recon.initialization import InitializationError, initial_pose, triangulate_dlt
from twinsim.shape.model import load_model

CENTRE_MM = np.array([10.0, -20.0, 30.0])


@pytest.fixture(scope="module")
def model():
    return load_model("L1")


def _pose(rot_deg=(4.0, -3.0, 5.0), t_mm=(1.5, -2.0, 1.0)) -> np.ndarray:
    rv = np.deg2rad(np.asarray(rot_deg))
    Rm = frames.rotation_about_axis(rv / np.linalg.norm(rv), float(np.linalg.norm(rv)))
    return frames.make_transform(Rm, CENTRE_MM + np.asarray(t_mm))


def _synthetic_acquisitions(model, vertices_mm, size_px=256, views=("AP", "LAT")) -> list[Acquisition]:
    """X-rays rendered by the splatting renderer itself (full detector), scaled to [0, 1]."""
    out = []
    sigma = torch.tensor(0.6 * R.vertex_spacing_mm(model.mean_mm, model.faces))
    v = torch.tensor(vertices_mm)
    cov = R.covariances(v, sigma)
    for name in views:
        g = view_geometry(CENTRE_MM, NAMED_VIEWS[name], size_px)
        img = R.render(v, cov, [camera_for(g, dtype=torch.float64)], shell_weight=0.3, solid_weight=1.0,
                       faces=torch.as_tensor(model.faces, dtype=torch.long), backend="torch")[0].numpy()
        out.append(Acquisition((img / img.max()).astype(np.float32), g, view={"name": name}))
    return out


def test_triangulation_recovers_points():
    rng = np.random.default_rng(0)
    pts = CENTRE_MM + rng.uniform(-40, 40, size=(12, 3))
    geoms = [view_geometry(CENTRE_MM, NAMED_VIEWS[n]) for n in ("AP", "LAO30")]
    got = triangulate_dlt([g.P for g in geoms], [g.project(pts) for g in geoms])
    assert np.abs(got - pts).max() < 1e-6
    noisy = triangulate_dlt([g.P for g in geoms], [g.project(pts) + rng.normal(0, 0.5, (12, 2)) for g in geoms])
    err = np.linalg.norm(noisy - pts, axis=1)
    assert 0.01 < err.mean() < 3.0  # half-pixel noise: errors of the order of a pixel at the vertebra, not zero


def test_solid_rendering_is_the_chord_length_of_a_sphere():
    s = o3d.geometry.TriangleMesh.create_sphere(radius=20.0, resolution=40)
    v, f = np.asarray(s.vertices), np.asarray(s.triangles)
    g = ProjectionGeometry(1020.0, 96, 96, (0.5, 0.5), frames.make_transform(t=[0.0, 0.0, -620.0]))
    V = torch.tensor(v)
    img = R.render(V, R.covariances(V, torch.tensor(0.6 * R.vertex_spacing_mm(v, f))), [camera_for(g, dtype=torch.float64)],
                   shell_weight=0.0, solid_weight=1.0, faces=torch.tensor(f))[0].numpy()
    uv = np.stack(np.meshgrid(np.arange(96) + 0.5, np.arange(96) + 0.5), -1).reshape(-1, 2)
    d = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(g.K).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = d @ np.array([0.0, 0.0, 620.0])
    chord = 2 * np.sqrt(np.clip(b * b - (620.0**2 - 400.0), 0, None)).reshape(96, 96)
    assert chord.max() == pytest.approx(40.0, abs=0.1)
    assert np.abs(img - chord).mean() < 0.6
    assert np.abs(img - chord)[chord > 10].mean() < 0.6


def test_renderer_gradients_match_finite_differences(model):
    from twinsim.shape.differentiable import DifferentiableInstance

    inst = DifferentiableInstance(model, 3, dtype=torch.float64)
    faces = torch.as_tensor(model.faces, dtype=torch.long)
    sigma = torch.tensor(0.6 * R.vertex_spacing_mm(model.mean_mm, model.faces))
    g = view_geometry(CENTRE_MM, View("obl", 35.0, 10.0), 256)
    cam = camera_for(g, RoiBox(60, 60, 200, 200), 2, dtype=torch.float64)
    weights = torch.tensor(np.random.default_rng(1).uniform(0.5, 1.5, (cam.height_px, cam.width_px)))

    def f(params: torch.Tensor) -> torch.Tensor:
        v = inst(params[None, 6:], params[None, :3], params[None, 3:6] + torch.tensor(CENTRE_MM))[0]
        img = R.render(v, R.covariances(v, sigma, faces, 0.5), [cam], shell_weight=0.3, solid_weight=1.0, faces=faces)[0]
        return (img * weights).sum()

    p0 = torch.tensor([0.05, -0.03, 0.02, 0.7, -0.4, 0.3, 0.5, -0.5, 0.2], dtype=torch.float64, requires_grad=True)
    f(p0).backward()
    analytic = p0.grad.numpy()
    numeric = np.zeros(len(p0))
    for i, h in enumerate([1e-5] * 3 + [1e-4] * 3 + [1e-4] * 3):
        e = torch.zeros_like(p0)
        e[i] = h
        with torch.no_grad():
            numeric[i] = (f(p0 + e) - f(p0 - e)).item() / (2 * h)
    assert np.all(np.abs(analytic) > 1e-3), "every parameter must move the image"
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=1e-6 * np.abs(numeric).max())


def test_crop_and_reduce_keep_pixels_where_the_camera_puts_them():
    g = view_geometry(CENTRE_MM, NAMED_VIEWS["AP"], 256)
    point = CENTRE_MM + np.array([5.0, 3.0, -7.0])
    u, v = g.project(point[None])[0]
    box = RoiBox(50, 70, 201, 190)
    for factor in (1, 2, 4):
        uv = camera_for(g, box, factor, dtype=torch.float64).project(torch.tensor(point[None]))[0].numpy()
        np.testing.assert_allclose(uv, [(u - box.col0) / factor, (v - box.row0) / factor], atol=1e-9)
    img = np.arange(256 * 256, dtype=np.float32).reshape(256, 256)
    small = crop_image(img, box, 4)
    assert small.shape == (30, 38)
    assert small[0, 0] == pytest.approx(img[70:74, 50:54].mean())


def test_round_trip_recovers_pose_and_shape(model):
    coeffs = np.array([0.8, -0.6, 0.5, 0.0, 0.4])
    T_true = _pose()
    truth = frames.transform_points(T_true, model.instance(coeffs))
    acqs = _synthetic_acquisitions(model, truth)
    # A start 4 deg / 4 mm off and at the mean shape; the fit sees only images and this start.
    from twinsim.recon.initialization import InitialPose

    T0 = frames.make_transform(t=CENTRE_MM)
    init = InitialPose(T0, "landmarks", [], np.zeros((0, 3)), 0.0)
    start_err = np.linalg.norm(frames.transform_points(T0, model.mean_mm) - truth, axis=1).mean()
    s = FitSettings(n_modes=5, landmark_weight=0.0, restarts=0, pyramid_mm=(2.0, 1.0, 0.5), iterations=(80, 80, 60),
                    patience=20, prior_weight=1e-4, shell_weight=0.3)
    r = reconstruct(model, acqs, Clicks([{}, {}]), s, init=init)
    err = np.linalg.norm(r.vertices_mm - truth, axis=1).mean()
    assert start_err > 3.0
    assert err < 0.5, f"mean surface error {err:.2f} mm (start {start_err:.2f} mm)"
    assert r.loss_history[-1]["loss"] < r.loss_history[0]["loss"]


def test_a_run_that_does_not_improve_on_its_start_is_restarted(model):
    from twinsim.recon.initialization import InitialPose

    acqs = _synthetic_acquisitions(model, frames.transform_points(_pose(), model.mean_mm), size_px=128)
    init = InitialPose(frames.make_transform(t=CENTRE_MM), "landmarks", [], np.zeros((0, 3)), 0.0)
    # One Adam step per run: a run's best is its own start, no better than the initial pose's loss.
    stuck = FitSettings(n_modes=2, landmark_weight=0.0, pyramid_mm=(2.0,), iterations=(1,), restarts=2)
    r = reconstruct(model, acqs, Clicks([{}, {}]), stuck, init=init)
    assert r.runs >= 2 and r.loss <= r.initial_loss
    good = FitSettings(n_modes=2, landmark_weight=0.0, pyramid_mm=(2.0,), iterations=(40,), restarts=2)
    r = reconstruct(model, acqs, Clicks([{}, {}]), good, init=init)
    assert r.runs == 1 and r.loss < r.initial_loss - 0.01


def test_initial_pose_from_clicks_and_backup(model):
    T_true = _pose()
    verts = frames.transform_points(T_true, model.mean_mm)
    lms = model.annotation_points(verts)
    geoms = [view_geometry(CENTRE_MM, NAMED_VIEWS[n]) for n in ("AP", "LAT")]
    init = initial_pose(model, geoms, simulate_clicks(geoms, lms, sigma_mm=0.0))
    assert init.method == "landmarks" and init.reprojection_px < 1e-6
    np.testing.assert_allclose(init.T_frame_model, T_true, atol=1e-6)
    # Only the backup points: centroid and superior in both views; orientation from the C-arm's poses and views.
    backup = simulate_clicks(geoms, lms, sigma_mm=0.0, names=["body_centroid", "superior_endplate_centre"])
    views = [{"lao_deg": NAMED_VIEWS[n].lao_deg, "cranial_deg": NAMED_VIEWS[n].cranial_deg} for n in ("AP", "LAT")]
    b = initial_pose(model, geoms, backup, views=views)
    assert b.method == "backup"
    err = np.linalg.norm(frames.transform_points(b.T_frame_model, model.mean_mm) - verts, axis=1).mean()
    assert err < 6.0  # a start, not a fit: the 4-5 deg the prior cannot see
    # The same views in a tracked frame turned 70 deg from the CT's: the prior follows the C-arm, not the frame's name.
    T_ref_ct = frames.make_transform(frames.rotation_about_axis(np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]),
                                                                np.deg2rad(70.0)), [40.0, -300.0, 25.0])
    in_ref = [g.in_frame(T_ref_ct, "ref") for g in geoms]
    b_ref = initial_pose(model, in_ref, backup, views=views)
    np.testing.assert_allclose(b_ref.T_frame_model, T_ref_ct @ b.T_frame_model, atol=1e-6)
    with pytest.raises(InitializationError, match="no orientation prior"):
        initial_pose(model, in_ref, backup)
    with pytest.raises(InitializationError, match="only 2 landmark"):
        initial_pose(model, geoms, backup, allow_fallback=False, views=views)


def test_degenerate_inputs_give_clear_errors(model, tmp_path):
    lms = model.annotation_points(frames.transform_points(_pose(), model.mean_mm))
    close = [view_geometry(CENTRE_MM, View(n, lao, 0.0)) for n, lao in (("a", 0.0), ("b", 3.0))]
    with pytest.raises(InitializationError, match="only 3.0 deg apart"):
        initial_pose(model, close, simulate_clicks(close, lms))
    geoms = [view_geometry(CENTRE_MM, NAMED_VIEWS[n]) for n in ("AP", "LAT")]
    clicks = simulate_clicks(geoms, lms, names=["spinous_process_tip", "left_pedicle_centre"])
    with pytest.raises(InitializationError, match="Mark >= 3 landmarks"):
        initial_pose(model, geoms, clicks)
    # The C-arm centred 200 mm away: the vertebra is outside the image.
    far = [view_geometry(CENTRE_MM + [0.0, 0.0, 200.0], NAMED_VIEWS[n]) for n in ("AP", "LAT")]
    with pytest.raises(InitializationError, match="outside"):
        initial_pose(model, far, simulate_clicks(far, lms))
    with pytest.raises(InitializationError, match="outside the X-ray"):
        roi_box(far[0], frames.transform_points(_pose(), model.mean_mm), 10.0, 0)
    bad = tmp_path / "clicks.json"
    for text, match in (("{", "not valid JSON"), (json.dumps({"format": "x"}), "twinsim-landmarks/1"),
                        (json.dumps({"format": "twinsim-landmarks/1", "views": [{"landmarks_px": {"body_centroid": [1]}}]}),
                         r"\[u, v\]")):
        bad.write_text(text)
        with pytest.raises(LandmarksFileError, match=match):
            load_clicks(bad)
    with pytest.raises(LandmarksFileError, match="not found"):
        load_clicks(tmp_path / "missing.json")


def test_clicks_file_round_trip(tmp_path, model):
    geoms = [view_geometry(CENTRE_MM, NAMED_VIEWS[n]) for n in ("AP", "LAT")]
    c = simulate_clicks(geoms, model.annotation_points(model.mean_mm + CENTRE_MM), seed=3)
    c.save(tmp_path / "c.json")
    back = load_clicks(tmp_path / "c.json", n_views=2)
    for a, b in zip(c.views, back.views, strict=True):
        assert set(a) == set(b) == set(CLICKABLE)
        for n in a:
            np.testing.assert_allclose(a[n], b[n])
    with pytest.raises(LandmarksFileError, match="3 images"):
        load_clicks(tmp_path / "c.json", n_views=3)


def test_reconstruct_cli_writes_mesh_params_and_overlay(tmp_path, model):
    from twinsim.cli import main
    from twinsim.commands.reconstruct import FIT_RESTARTS

    assert FIT_RESTARTS == FitSettings().restarts

    truth = frames.transform_points(_pose(), model.instance([0.5, -0.5]))
    acqs = _synthetic_acquisitions(model, truth)
    paths = [a.save(tmp_path / "in", n)[0] for a, n in zip(acqs, ("AP", "LAT"), strict=True)]
    simulate_clicks([a.geometry for a in acqs], model.annotation_points(truth), seed=1).save(tmp_path / "in" / "clicks.json")
    out = tmp_path / "out"
    args = ["reconstruct", "--images", f"{paths[0]},{paths[1]}", "--level", "L1",
            "--landmarks", str(tmp_path / "in" / "clicks.json"), "--iterations", "30,25,15", "--restarts", "0", "-o", str(out)]
    assert main(args) == 0
    for name in ("L1_reconstruction.ply", "L1_reconstruction.stl", "L1_reconstruction.json", "L1_overlay.png"):
        assert (out / name).stat().st_size > 1000, name
    params = json.loads((out / "L1_reconstruction.json").read_text())
    T = np.array(params["T_frame_model_mm"])
    fitted = frames.transform_points(T, model.instance(params["coeffs_sd"]))
    assert np.linalg.norm(fitted - truth, axis=1).mean() < 1.5
    assert params["initialization"]["method"] == "landmarks" and params["loss_history"]
    # Bad input: exit 2 with a message, and nothing written.
    (tmp_path / "in" / "clicks.json").write_text("[]")
    out2 = tmp_path / "out2"
    assert main(args[:-1] + [str(out2)]) == 2
    assert not out2.exists()


def test_metrics_on_the_example_vertebra(example_ct, example_patient_model):
    from twinsim.evaluation.recon_metrics import evaluate

    truth = example_patient_model.vertebra("L1")
    mask = example_ct.vertebra_mask("L1")
    same = evaluate(truth, truth, mask, example_ct.affine_mm)
    assert same["dice"] > 0.9 and same["msd_mm"] < 0.05 and same["nsd_1mm"] > 0.99
    shifted = truth.transformed(frames.make_transform(t=[2.0, 0.0, 0.0]), "ct")
    m = evaluate(shifted, truth, mask, example_ct.affine_mm)
    assert m["dice"] < same["dice"] - 0.1
    assert 1.0 < m["hd95_mm"] <= 2.05 and 0.3 < m["msd_mm"] < 2.0
    assert m["nsd_1mm"] < m["nsd_2mm"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the gsplat backend needs CUDA")
def test_gsplat_and_torch_backends_agree(model):
    v = torch.tensor(frames.transform_points(_pose(), model.mean_mm), dtype=torch.float32)
    sigma = torch.tensor(0.6 * R.vertex_spacing_mm(model.mean_mm, model.faces), dtype=torch.float32)
    faces = torch.as_tensor(model.faces, dtype=torch.long)
    g = view_geometry(CENTRE_MM, View("obl", 30.0, 10.0), 256)
    cam = camera_for(g, RoiBox(40, 40, 216, 216), 2)
    results = []
    for backend, dev in (("torch", "cpu"), ("gsplat", "cuda")):
        vv = v.to(dev).requires_grad_(True)
        img = R.render(vv, R.covariances(vv, sigma.to(dev), faces.to(dev), 0.5), [cam], shell_weight=0.3, solid_weight=1.0,
                       faces=faces.to(dev), backend=backend)[0]
        (img**2).sum().backward()
        results.append((img.detach().cpu().numpy(), vv.grad.cpu().numpy()))
    (a, ga), (b, gb) = results
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()
    assert np.abs(ga - gb).max() < 1e-2 * np.abs(ga).max()
