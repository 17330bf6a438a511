"""Any patient: degraded CTs, the reference clamp's vertebra, the C-arm calibration and the rehearsal on a CT the
room was not built on, the suite file, and refusals that print one line and write nothing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from twinsim.anatomy.ct import PatientDataError
from twinsim.anatomy.degrade import Degradation, degraded_patient_files
from twinsim.bench.patient_suite import scene_for
from twinsim.sim.scene_config import DEFAULT_SCENE, SceneConfigError

pytestmark = pytest.mark.slow  # degraded CTs are built and meshed: a minute and more

# Short versions: each variant is also cut inside T10, so that only T11-L1 (and the skin) are meshed.
LUMBAR = {"cut_level": "T10"}
VARIANTS = {
    "3mm": Degradation(slice_mm=3.0, inplane_mm=0.9, **LUMBAR),
    "cropped": Degradation(cut_level="T12"),  # the field of view ends inside the vertebra above the target
    "heavy": Degradation(body_shell_mm=30.0, **LUMBAR),
}


@pytest.fixture(scope="module")
def variants(example):
    from twinsim.anatomy.patient import build_patient

    out = {}
    for name, deg in VARIANTS.items():
        ct, labels = degraded_patient_files(example.ct, example.labels, example.label_table, deg)
        out[name] = (ct, labels, example.label_table, build_patient(ct, labels, example.label_table, progress=False))
    return out


def test_degradations_change_what_they_name(variants, example):
    ct3 = nib.load(variants["3mm"][0])
    assert np.allclose(ct3.header.get_zooms(), (0.9, 0.9, 3.0), atol=1e-3)
    cropped = variants["cropped"][3]
    assert cropped.levels == ["L1"] and "superior" in cropped.cut_levels["T12"]  # T12 cut, L1 whole
    heavy, lumbar = variants["heavy"][3], variants["3mm"][3]
    assert heavy.levels == lumbar.levels == ["T11", "T12", "L1"]
    # 30 mm more tissue all round: the body's cross-section grows by well over a litre over this span.
    assert heavy.skin.volume_mm3 > lumbar.skin.volume_mm3 + 1.5e6
    with pytest.raises(PatientDataError, match="not a vertebra name"):
        Degradation(cut_level="hip")
    with pytest.raises(PatientDataError, match="slice_mm must be > 0"):
        Degradation(slice_mm=0.0)


def test_reference_clamp_goes_to_the_nearest_complete_vertebra(example_patient_model, variants):
    from twinsim.sim.markers_in_room import clamp_level

    p = example_patient_model
    key = "room.yaml: markers.patient_reference.level"
    assert clamp_level(p, "L1", None, key) == "T12"  # L2 is cut in this CT: T12 is the only neighbour
    c = p.vertebra("T12").centroid_mm
    nearest = min(("T11", "L1"), key=lambda lvl: np.linalg.norm(p.vertebra(lvl).centroid_mm - c))
    assert clamp_level(p, "T12", None, key) == nearest  # never the target itself while another is whole
    assert clamp_level(variants["cropped"][3], "L1", None, key) == "L1"  # the one complete vertebra
    assert clamp_level(p, "L1", "t11", key) == "T11"
    with pytest.raises(SceneConfigError, match=r"markers\.patient_reference\.level: vertebra L2 is cut by the CT field of view"):
        clamp_level(p, "L1", "L2", key)
    with pytest.raises(SceneConfigError, match=r"markers\.patient_reference\.level: vertebra S1 is not in the label map"):
        clamp_level(p, "L1", "S1", key)


def _scene(tmp_path: Path, files: tuple, target: str, **edits) -> Path:
    return scene_for(DEFAULT_SCENE, files[0], files[1], files[2], target, tmp_path / "scene.yaml", edits)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_carm_calibration_succeeds_on_each_variant(variants, name, tmp_path):
    from twinsim import frames
    from twinsim.hal.sim.carm import SimCArm
    from twinsim.hal.sim.clock import SimClock
    from twinsim.hal.sim.phantom import sim_phantom, true_T_marker_source_mm
    from twinsim.hal.sim.tracker import SimTracker
    from twinsim.imaging.projection import ProjectionGeometry
    from twinsim.sim.hand_held import measured_pose_m, tool
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room
    from twinsim.workflows.carm_calibration import DEFAULT_VIEWS, calibrate_carm_with_phantom

    ct, labels, table, patient = variants[name]
    # The 3 mm variant also with the beads over its anatomy (the other way the scene allows).
    shots = "over_patient" if name == "3mm" else "empty_beam"
    scene = _scene(tmp_path, (ct, labels, table), "L1", **{"carm.calibration_shots": shots})
    with build_operating_room(scene, patient=patient) as room:
        vega = room_tracker(room, {"seed": 1})
        carm = SimCArm(room, size_px=256, n_samples=96, seed=1)
        run = calibrate_carm_with_phantom(carm, SimTracker(vega, SimClock()), sim_phantom(room, vega, carm, seed=1),
                                          views=DEFAULT_VIEWS)
        assert carm.phantom_world_m is None and carm.patient_in_beam
        assert len(run.views) >= 3 and run.result.residual_px_rms < 1.0
        T_true = true_T_marker_source_mm(room, vega)
        T_world_ref = measured_pose_m(tool(vega, "patient_reference"))
        target = frames.transform_points(frames.invert(T_world_ref), room.target_world_m()[None]) * 1000.0
        # What the reconstruction uses: the target's projection, against the true geometry's. Measured 0.7-1.1 px
        # (0.4-0.6 mm at the vertebra) on the example CT and these variants, the committed calibration's procedure.
        for shot in run.shots:
            g_true = ProjectionGeometry(room.config.carm.geometry.sdd_mm, run.result.width_px, run.result.height_px,
                                        run.result.pixel_spacing_mm, shot.T_ref_marker_mm @ T_true, "ref")
            assert np.linalg.norm(run.result.geometry(shot.T_ref_marker_mm).project(target) - g_true.project(target)) < 1.5


@pytest.mark.timeout(900)
def test_a_rehearsal_on_a_degraded_ct_runs_end_to_end(variants, tmp_path):
    """The 3 mm variant in the default room with only its patient swapped: calibrated for it, then the procedure."""
    from twinsim.evaluation.placement_truth import SimVerifier
    from twinsim.hal.rig import load_rig
    from twinsim.procedure.rehearsal import RehearsalSettings
    from twinsim.recon.fit import FitSettings
    from twinsim.rigs.open_rig import new_rehearsal, open_rig

    ct, labels, table, _ = variants["3mm"]
    scene = _scene(tmp_path, (ct, labels, table), "L1")
    rig = load_rig(None).model_copy(update={"scene": scene})
    short = FitSettings(iterations=(25, 15, 10), restarts=0)
    with open_rig(rig, progress=False) as dev:
        reh = new_rehearsal(dev, tmp_path / "out", RehearsalSettings(seed=0, fit_settings=short), None,
                        SimVerifier(dev, "L1"))
        log = reh.run().log
    steps = {s.name: s.state for s in log.steps}
    assert steps["calibration"] == "done" and steps["reconstruction"] == "done", log.summary
    assert log.meta["motions"]["sent_without_passed_check"] == 0
    assert reh.succeeded, log.summary
    for g in reh.placed.values():
        assert g.truth["tip_error_mm"] < 1.5 and g.truth["axis_error_deg"] < 1.5
    for side in ("left", "right"):  # each placed guide backs out high over the back before the next transit
        step = next(s for s in log.steps if s.name == f"guide {side}")
        assert step.figures["retreat"] == "100 mm past the approach pose", step.figures["retreat"]
        assert [m["name"] for m in step.figures["motions"]][-2:] == [f"{side}: back out along the axis",
                                                                     f"{side}: retreat along the axis"]
