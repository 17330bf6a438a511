"""The patient suite: its file, the bench over it, and refusals of a patient that cannot be done (one line, exit 2,
nothing written)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from twinsim.bench.patient_suite import SuiteError, load_suite, scene_for
from twinsim.sim.scene_config import DEFAULT_SCENE


def _scene(tmp_path: Path, files: tuple, target: str, **edits) -> Path:
    return scene_for(DEFAULT_SCENE, files[0], files[1], files[2], target, tmp_path / "scene.yaml", edits)


def _refused(tmp_path: Path, scene: Path, capsys) -> str:
    from twinsim.cli import main

    out = tmp_path / "out"
    rc = main(["rehearse", "--scene", str(scene), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


def test_a_patient_that_cannot_be_done_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, example,
                                                                                      example_patient_model):
    files = (example.ct, example.labels, example.label_table)
    err = _refused(tmp_path, _scene(tmp_path, files, "L2"), capsys)
    assert "patient.target_level" in err and "L2 is cut by the CT field of view" in err
    err = _refused(tmp_path, _scene(tmp_path, files, "L1", **{"markers.patient_reference.level": "L2"}), capsys)
    assert "markers.patient_reference.level: vertebra L2 is cut" in err


def test_a_ct_without_skin_or_with_mismatched_labels_is_refused(tmp_path, capsys):
    from twinsim.anatomy.tptbox_sample import tptbox_sample

    tp = tptbox_sample()
    err = _refused(tmp_path, _scene(tmp_path, (tp.ct, tp.labels, tp.label_table), "L3"), capsys)
    assert "patient.source" in err and "does not hold the patient's skin" in err
    img = nib.load(tp.labels)
    small = nib.Nifti1Image(np.asanyarray(img.dataobj)[:-4], img.affine)
    nib.save(small, tmp_path / "labels_other_grid.nii.gz")
    err = _refused(tmp_path, _scene(tmp_path, (tp.ct, tmp_path / "labels_other_grid.nii.gz", tp.label_table), "L3"), capsys)
    assert "patient.source" in err and "same voxel grid" in err


def test_suite_file_is_read_and_checked(tmp_path):
    suite = load_suite()
    names = {p.name: p for p in suite}
    assert {"example", "example-3mm", "example-cropped", "example-heavy", "tptbox-sample"} <= set(names)
    assert names["tptbox-sample"].procedure == "plan" and names["example-3mm"].degradation.slice_mm == 3.0
    bad = tmp_path / "suite.yaml"
    bad.write_text("format: twinsim-patient-suite/1\npatients:\n  - {name: a, source: example, targets: [L1], degrade: {slices: 3}}\n")
    with pytest.raises(SuiteError, match="degrade.slices"):
        load_suite(bad)
    bad.write_text("format: twinsim-patient-suite/1\npatients:\n  - {name: a, source: {ct: no.nii.gz, labels: no.nii.gz}, "
                   "targets: [L1]}\n")
    with pytest.raises(SuiteError, match=r"patients\[0\] \(a\)\.source\.ct: file not found"):
        load_suite(bad)
    bad.write_text("format: twinsim-patient-suite/1\npatients:\n  - {name: a, source: example, targets: [hip]}\n")
    with pytest.raises(SuiteError, match="not a vertebra name"):
        load_suite(bad)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_bench_patients_records_refusals_and_plans_on_the_second_ct(tmp_path, example_patient_model):
    """A short suite: a target the example CT cuts (refused, not crashed) and tptbox's sample, planned only."""
    import json

    from twinsim.bench.patients import format_patients_bench, plot_patients_bench, run_patients_bench

    suite = tmp_path / "suite.yaml"
    suite.write_text("format: twinsim-patient-suite/1\npatients:\n"
                     "  - {name: example, source: example, targets: [L2]}\n"
                     "  - {name: tptbox-sample, source: tptbox, targets: [L3], procedure: plan}\n")
    from twinsim.recon.fit import FitSettings

    seen = []
    short = FitSettings(iterations=(10, 5, 3), restarts=0)  # what is tested is the suite's bookkeeping, not the fit
    r = run_patients_bench(suite, n_pairs=1, out_dir=tmp_path / "cases", progress=False, on_row=seen.append, plan_fit=short)
    assert [row["status"] for row in r["rows"]] == ["refused", "ran"] and r["complete"]
    assert "L2 is cut by the CT field of view" in r["rows"][0]["reason"]
    assert len(seen) == 2 and not seen[0]["complete"]  # each row saved as it finished
    plan = r["rows"][1]["summary"]
    assert plan["cases"] == 1 and plan["stopped_before_plan"] == 0 and "given_unsafe_paths" in plan
    text = format_patients_bench(r)
    assert "tptbox-sample" in text and "refused" in text
    assert plot_patients_bench(r, tmp_path / "bench.png").stat().st_size > 10_000
    assert json.loads(json.dumps(r))["rows"][1]["target"] == "L3"  # the record is plain JSON
