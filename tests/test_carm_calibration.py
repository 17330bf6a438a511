"""C-arm calibration from a tracked bead phantom: recovers a known calibration within its noise-derived bound."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.tracking.calibration import CalibrationError
from twinsim.tracking.carm_calibration import CArmShot, calibrate_carm

W, H, SPACING = 512, 512, (0.6, 0.6)


def _truth():
    """``T_marker_source`` as built (a few mm and a degree off its CAD value), the C's SDD and principal offset."""
    T = frames.make_transform(Rotation.from_euler("xyz", [0.4, -0.7, 1.1], degrees=True).as_matrix(), [-220.0, 12.0, -380.0])
    cad = frames.make_transform(t=[-215.0, 10.0, -385.0])
    return T, cad, 1020.0, (2.5, -1.8)


def _source_pose(beam):
    """Source 620 mm from the isocenter (the origin), z along the beam."""
    z = beam / np.linalg.norm(beam)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return frames.make_transform(np.column_stack([x, np.cross(z, x), z]), -620.0 * z)


def _shots(rng, T_ms, sdd, pp, noise_px, n_views=5):
    beads = rng.uniform(-50, 50, (16, 3))  # a 3D phantom at the isocenter (tracked frame, mm)
    shots = []
    for k in range(n_views):
        a, b = np.radians(-40 + 20 * k), np.radians(rng.uniform(-15, 15))  # orbital and angular turns of the C
        T_rs = _source_pose(np.array([np.sin(a), np.sin(b), np.cos(a) * np.cos(b)]))
        T_rm = T_rs @ frames.invert(T_ms)  # where the tracker sees the C-arm's marker
        g = ProjectionGeometry(sdd, W, H, SPACING, T_rs, "ref", pp)
        uv = g.project(beads) + rng.normal(0.0, noise_px, (len(beads), 2))
        uv[k % len(beads)] = np.nan  # one bead hidden by something in each view
        shots.append(CArmShot(beads, uv, T_rm))
    return shots


def test_recovers_a_known_calibration_within_its_noise_bound():
    rng = np.random.default_rng(0)
    T_true, cad, sdd, pp = _truth()
    noise = 0.3
    shots = _shots(rng, T_true, sdd, pp, noise)
    cal = calibrate_carm(shots, W, H, SPACING, sdd0_mm=1000.0, T_marker_source0_mm=cad)
    sd = cal.parameter_sd
    # The residual is the detection noise (2D RMS of two N(0, 0.3 px) components: ~0.42 px).
    assert 0.3 < cal.residual_px_rms < 0.55
    assert abs(cal.sdd_mm - sdd) < 4 * sd["sdd_mm"] + 1e-6
    assert abs(cal.principal_offset_mm[0] - pp[0]) < 4 * sd["principal_x_mm"]
    dt = np.linalg.norm(cal.T_marker_source_mm[:3, 3] - T_true[:3, 3])
    dR = np.degrees(Rotation.from_matrix(cal.T_marker_source_mm[:3, :3].T @ T_true[:3, :3]).magnitude())
    assert dt < 4 * sd["translation_mm"] and dR < 4 * sd["rotation_deg"]
    # Marginal deviations are wide: the principal point trades off against the rotation (~1 deg of rotation moves
    # the image like ~10 mm of principal point), the SDD against the source's depth. What matters, the projection
    # of a new exposure, is tight:
    # A new tracked exposure, not used in the fit, gets its geometry from the calibration: its beads land within ~1 px.
    new = _shots(np.random.default_rng(5), T_true, sdd, pp, 0.0, n_views=7)[6]
    ok = np.isfinite(new.beads_px).all(axis=1)
    err = np.linalg.norm(cal.geometry(new.T_ref_marker_mm).project(new.beads_ref_mm[ok]) - new.beads_px[ok], axis=1)
    assert err.max() < 1.5


def test_noise_free_shots_recover_it_exactly():
    T_true, cad, sdd, pp = _truth()
    cal = calibrate_carm(_shots(np.random.default_rng(1), T_true, sdd, pp, 0.0), W, H, SPACING, 1000.0, cad)
    np.testing.assert_allclose(cal.T_marker_source_mm, T_true, atol=1e-4)
    assert cal.sdd_mm == pytest.approx(sdd, abs=1e-4) and cal.residual_px_rms < 1e-6


def test_phantom_file_is_read_and_checked(tmp_path):
    import json

    from twinsim.tracking.bead_phantom import load_phantom

    good = {"format": "twinsim-carm-phantom/1", "beads_ref_mm": np.arange(24.0).reshape(8, 3).tolist(), "bead_radius_mm": 1.0,
            "nominal_sdd_mm": 1020.0, "nominal_T_marker_source_mm": np.eye(4).tolist()}
    path = tmp_path / "phantom.json"
    path.write_text(json.dumps(good))
    p = load_phantom(path)
    assert p.beads_ref_mm.shape == (8, 3) and p.nominal_sdd_mm == 1020.0
    for change, match in (({"beads_ref_mm": [[0, 0, 0]]}, "at least 6"), ({"bead_radius_mm": -1}, "positive"),
                          ({"format": "x"}, "twinsim-carm-phantom/1"), ({"nominal_T_marker_source_mm": [[1, 2]]}, "nominal_T")):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(CalibrationError, match=match):
            load_phantom(path)
    bad = {k: v for k, v in good.items() if k != "nominal_sdd_mm"}
    path.write_text(json.dumps(bad))
    with pytest.raises(CalibrationError, match="missing nominal_sdd_mm"):
        load_phantom(path)
    with pytest.raises(CalibrationError, match="not found"):
        load_phantom(tmp_path / "none.json")


def test_bad_input_is_refused_with_a_reason():
    T_true, cad, sdd, pp = _truth()
    shots = _shots(np.random.default_rng(2), T_true, sdd, pp, 0.3)
    with pytest.raises(CalibrationError, match="at least 2 shots"):
        calibrate_carm(shots[:1], W, H, SPACING, 1000.0, cad)
    few = CArmShot(shots[0].beads_ref_mm, np.where(np.arange(16)[:, None] < 4, shots[0].beads_px, np.nan), shots[0].T_ref_marker_mm)
    with pytest.raises(CalibrationError, match="shot 0: only 3 beads detected"):
        calibrate_carm([few, *shots[1:]], W, H, SPACING, 1000.0, cad)
    with pytest.raises(CalibrationError, match="16 bead positions but 3 detections"):
        calibrate_carm([CArmShot(shots[0].beads_ref_mm, shots[0].beads_px[:3], shots[0].T_ref_marker_mm), *shots[1:]],
                       W, H, SPACING, 1000.0, cad)


def test_beads_rendered_into_an_xray_are_found_and_matched():
    from twinsim.imaging.acquisition import Acquisition
    from twinsim.imaging.beads import add_beads, detect_beads, match_beads

    rng = np.random.default_rng(3)
    T_rs = _source_pose(np.array([0.3, 0.1, 1.0]))
    g = ProjectionGeometry(1020.0, 256, 256, (1.2, 1.2), T_rs, "ref", (1.0, -2.0))
    # Anatomy-like background: smooth structure larger than a bead, plus detector noise.
    v, u = np.mgrid[0:256, 0:256]
    background = 0.4 + 0.15 * np.sin(u / 17.0) * np.cos(v / 23.0) + rng.normal(0, 0.01, (256, 256))
    beads = rng.uniform(-60, 60, (12, 3))
    acq = add_beads(Acquisition(image=background.astype(np.float32), geometry=g), beads, radius_mm=1.5)
    truth = g.project(beads)
    found = detect_beads(acq.image, bead_diameter_px=3.0 * 1020 / 620 / 1.2)
    matched = match_beads(found, truth + rng.normal(0, 3.0, truth.shape), gate_px=10.0)  # a prediction a few px off
    ok = np.isfinite(matched).all(axis=1)
    assert ok.sum() >= 11  # two beads may overlap in projection
    assert np.abs(matched[ok] - truth[ok]).max() < 0.5
    assert len(found) <= 13
    # Far predictions match nothing rather than a wrong bead.
    assert np.isnan(match_beads(found, truth + 40.0, gate_px=5.0)).all()


@pytest.fixture(scope="module")
def calibrated_room(example_patient_model):
    """The room, its tracker and C-arm, and the C-arm calibrated through the HAL with the bead phantom."""
    from twinsim.hal.sim.carm import SimCArm
    from twinsim.hal.sim.clock import SimClock
    from twinsim.hal.sim.phantom import sim_phantom
    from twinsim.hal.sim.tracker import SimTracker
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room
    from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom

    with build_operating_room(patient=example_patient_model) as room:
        vega = room_tracker(room, {"seed": 5})
        carm = SimCArm(room, size_px=256, n_samples=128, seed=5)
        tracker = SimTracker(vega, SimClock())
        phantom = sim_phantom(room, vega, carm, seed=5)
        run = calibrate_carm_with_phantom(carm, tracker, phantom)
        yield room, vega, carm, tracker, phantom, run


@pytest.mark.timeout(600)
def test_carm_calibration_in_the_room_through_the_hal(calibrated_room):
    from twinsim.hal.sim.phantom import true_T_marker_source_mm
    from twinsim.sim.hand_held import measured_pose_m, tool

    room, vega, carm, _, phantom, run = calibrated_room
    assert carm.phantom_world_m is None  # taken out of the beam again
    T_true = true_T_marker_source_mm(room, vega)
    T_world_ref = measured_pose_m(tool(vega, "patient_reference"))
    target_ref_mm = frames.transform_points(frames.invert(T_world_ref), room.target_world_m()[None]) * 1000.0
    cal, sd = run.result, run.result.parameter_sd
    assert len(run.views) >= 6 and run.result.n_points >= 0.75 * 20 * len(run.views)
    assert cal.residual_px_rms < 1.0
    dt = np.linalg.norm(cal.T_marker_source_mm[:3, 3] - T_true[:3, 3])
    dR = np.degrees(Rotation.from_matrix(cal.T_marker_source_mm[:3, :3].T @ T_true[:3, :3]).magnitude())
    assert dt < 4 * sd["translation_mm"] and dR < 4 * sd["rotation_deg"] and abs(cal.sdd_mm - 1020.0) < 4 * sd["sdd_mm"]
    # The parameters trade off against each other over this range of views (the principal point against the
    # rotation, the SDD against the source's depth), so they are judged by their deviations; what the
    # reconstruction uses, the projection, is checked directly below.
    # The solved geometry puts the phantom's beads where the true geometry does, to within a pixel, in every view.
    for shot in run.shots:
        g_cal = cal.geometry(shot.T_ref_marker_mm)
        g_true = ProjectionGeometry(room.config.carm.geometry.sdd_mm, cal.width_px, cal.height_px, cal.pixel_spacing_mm,
                                    shot.T_ref_marker_mm @ T_true, "ref")
        assert np.abs(g_cal.project(shot.beads_ref_mm) - g_true.project(shot.beads_ref_mm)).max() < 1.0
        # ... and the target vertebra, 90 mm below the phantom's centre, outside its volume.
        assert np.linalg.norm(g_cal.project(target_ref_mm) - g_true.project(target_ref_mm)) < 1.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reconstruction_from_tracked_xrays_meets_its_floor(calibrated_room, example_ct):
    """Two X-rays whose geometry comes from the tracker and the C-arm calibration, in ``ref``: the fit lands
    the vertebra where it truly is (scored in ct through the room's true ``T_ref_ct``), within the floor."""
    from twinsim.evaluation.recon_metrics import evaluate
    from twinsim.evaluation.simulated_clicks import simulate_clicks, true_landmarks_mm
    from twinsim.hal import CArmView
    from twinsim.recon.fit import FitSettings, reconstruct
    from twinsim.shape.model import load_model
    from twinsim.sim.carm_imaging import carm_projection
    from twinsim.sim.hand_held import measured_pose_m, tool
    from twinsim.workflows.tracked_xray import acquire_tracked

    room, vega, carm, tracker, _, run = calibrated_room
    views = [CArmView("AP", 0.0, 0.0), CArmView("RAO 60", -60.0, 0.0)]
    acqs, true_geoms = [], []
    for v in views:
        acqs.append(acquire_tracked(carm, tracker, run.result, v))
        true_geoms.append(carm_projection(room, (256, 256), "ct"))
    assert all(a.geometry.frame == "ref" and "T_ref_carm_marker_mm" in a.meta for a in acqs)
    # An image read out at another size than the C-arm was calibrated at has no known geometry.
    from dataclasses import replace

    from twinsim.workflows.tracked_xray import TrackedXrayError

    with pytest.raises(TrackedXrayError, match="calibrate it at this read-out"):
        acquire_tracked(carm, tracker, replace(run.result, width_px=128, height_px=128), views[0])
    truth = room.patient.vertebra("L1")
    model = load_model("L1")
    clicks = simulate_clicks(true_geoms, true_landmarks_mm(model, truth, iterations=20), 1.0, seed=3)  # a short fit: a test
    T_ref_ct = frames.invert(frames.scale_translation(measured_pose_m(tool(vega, "patient_reference")), 1000.0)) \
        @ frames.scale_translation(room.T_world_ct, 1000.0)
    mask = example_ct.vertebra_mask("L1", require_complete=False)
    fit = FitSettings(restarts=0, iterations=(30, 25, 15))  # a short fit: the floor is on the chain, not the optimiser
    tracked = reconstruct(model, acqs, clicks, fit)
    dice = evaluate(tracked.mesh().transformed(frames.invert(T_ref_ct), "ct"), truth, mask, example_ct.affine_mm)["dice"]
    assert dice > 0.75, dice  # a generous floor; `twinsim bench recon --geometry tracked` compares with the true geometry
    assert tracked.frame == "ref"
