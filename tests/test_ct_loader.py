"""Loader checks on small synthetic volumes: each bad input gets its own clear message."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import synthetic_volume, write_nifti

from twinsim.anatomy.ct import PatientDataError, load_ct
from twinsim.anatomy.patient import MeshingParams, build_patient


def test_good_pair_loads_with_levels_and_cut_detection(synthetic_pair):
    ct_path, lab_path, *_ = synthetic_pair
    ct = load_ct(ct_path, lab_path)
    assert ct.levels == ["T12", "L1"]
    assert ct.complete_levels == ["L1"]
    assert ct.edges_of["T12"] == ["superior"]
    assert ct.vertebra_mask("L1").sum() == 12 * 10 * 10


def test_missing_file(tmp_path, synthetic_pair):
    _, lab_path, *_ = synthetic_pair
    with pytest.raises(PatientDataError, match="CT file not found"):
        load_ct(tmp_path / "nope.nii.gz", lab_path)


def test_malformed_file(tmp_path, synthetic_pair):
    _, lab_path, *_ = synthetic_pair
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all")
    with pytest.raises(PatientDataError, match="not a readable NIfTI"):
        load_ct(bad, lab_path)


def test_shape_mismatch(tmp_path, synthetic_pair):
    ct_path, _, _, labels, affine = synthetic_pair
    lab = write_nifti(tmp_path / "small.nii.gz", labels[:-2], affine)
    with pytest.raises(PatientDataError, match="shape"):
        load_ct(ct_path, lab)


def test_affine_mismatch(tmp_path, synthetic_pair):
    ct_path, _, _, labels, affine = synthetic_pair
    shifted = affine.copy()
    shifted[0, 3] += 5.0
    lab = write_nifti(tmp_path / "shifted.nii.gz", labels, shifted)
    with pytest.raises(PatientDataError, match="different affines"):
        load_ct(ct_path, lab)


def test_requested_vertebra_not_in_labels(synthetic_pair):
    ct = load_ct(*synthetic_pair[:2])
    with pytest.raises(PatientDataError, match="L3 is not in the label map"):
        ct.vertebra_mask("L3")


def test_vertebra_cut_by_field_of_view(synthetic_pair):
    ct = load_ct(*synthetic_pair[:2])
    with pytest.raises(PatientDataError, match="T12 is cut by the CT field of view.*superior"):
        ct.vertebra_mask("T12")


def test_cut_vertebra_requested_from_patient_builder(tmp_path, synthetic_pair):
    with pytest.raises(PatientDataError, match="T12 is cut"):
        build_patient(*synthetic_pair[:2], require_levels=["T12"], cache_dir=tmp_path / "c", progress=False,
                      params=MeshingParams(vertebra_vertices=800, skin_vertices=1500))


@pytest.mark.parametrize(
    "transform,match",
    [
        (lambda hu: hu + 1024.0, "no value below 0"),  # stored with the usual offset
        (lambda hu: (hu + 1000.0) / 3000.0, "no value below 0"),  # normalised to [0, 1]
        (lambda hu: hu / 1000.0, "maximum"),  # scaled: negative values but no bone
    ],
)
def test_intensities_not_hounsfield(tmp_path, synthetic_pair, transform, match):
    _, lab_path, hu, _, affine = synthetic_pair
    ct = write_nifti(tmp_path / "nothu.nii.gz", transform(hu).astype(np.float32), affine)
    with pytest.raises(PatientDataError, match=f"Hounsfield.*{match}|{match}.*Hounsfield"):
        load_ct(ct, lab_path)


def test_spacing_in_metres_is_reported(tmp_path, synthetic_pair):
    _, _, hu, labels, affine = synthetic_pair
    aff_m = affine.copy()
    aff_m[:3, :] *= 1e-3
    # Header claims mm but the numbers are metres: a clear error, not a 1000x too small mesh.
    ct = write_nifti(tmp_path / "ct_m.nii.gz", hu.astype(np.int16), aff_m, unit="mm")
    lab = write_nifti(tmp_path / "lab_m.nii.gz", labels, aff_m, unit="mm")
    with pytest.raises(PatientDataError, match="metres"):
        load_ct(ct, lab)
    # Header that says metres is converted.
    ct = write_nifti(tmp_path / "ct_m2.nii.gz", hu.astype(np.int16), aff_m, unit="meter")
    lab = write_nifti(tmp_path / "lab_m2.nii.gz", labels, aff_m, unit="meter")
    assert np.allclose(load_ct(ct, lab).spacing_mm, [1.5, 1.5, 2.0])


def test_label_tables_csv_and_json(tmp_path, synthetic_pair):
    _, _, hu, labels, affine = synthetic_pair
    relabelled = np.where(labels == 31, 7, np.where(labels == 32, 9, 0)).astype(np.uint8)
    ct = write_nifti(tmp_path / "ct.nii.gz", hu.astype(np.int16), affine)
    lab = write_nifti(tmp_path / "lab.nii.gz", relabelled, affine)
    csv = tmp_path / "table.csv"
    csv.write_text("group,structure,id\nvertebrae,vertebrae_L1,7\nvertebrae,vertebrae_T12,9\norgans,liver,5\n")
    assert load_ct(ct, lab, csv).level_ids == {"L1": 7, "T12": 9}
    js = tmp_path / "table.json"
    js.write_text(json.dumps({"L1": 7, "T12": 9}))
    assert load_ct(ct, lab, js).level_ids == {"L1": 7, "T12": 9}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nL1,7\n")
    with pytest.raises(PatientDataError, match="'structure' and 'id' columns"):
        load_ct(ct, lab, bad)


def test_orientation_does_not_change_the_anatomy(tmp_path):
    """The same volume stored RAS, LPS and LAS gives the same meshes in the ct (RAS) frame."""
    hu, labels = synthetic_volume()
    ras = np.diag([1.5, 1.5, 2.0, 1.0])
    ras[:3, 3] = [-30.0, -27.0, -30.0]
    params = MeshingParams(vertebra_vertices=800, skin_vertices=1500)
    results = {}
    for name, flips in {"RAS": (), "LPS": (0, 1), "LAS": (0,)}.items():
        data_hu, data_lab, aff = hu, labels, ras.copy()
        for ax in flips:
            data_hu, data_lab = np.flip(data_hu, ax), np.flip(data_lab, ax)
            flip = np.eye(4)
            flip[ax, ax] = -1
            flip[ax, 3] = hu.shape[ax] - 1
            aff = aff @ flip
        assert "".join(nib.aff2axcodes(aff)) == name
        ct = write_nifti(tmp_path / f"ct_{name}.nii.gz", np.ascontiguousarray(data_hu).astype(np.int16), aff)
        lab = write_nifti(tmp_path / f"lab_{name}.nii.gz", np.ascontiguousarray(data_lab), aff)
        p = build_patient(ct, lab, cache_dir=tmp_path / f"cache_{name}", params=params, progress=False)
        results[name] = p.vertebra("L1")
    ref = results["RAS"]
    voxel_volume = 12 * 10 * 10 * 1.5 * 1.5 * 2.0
    assert abs(ref.volume_mm3 - voxel_volume) / voxel_volume < 0.2
    for name in ("LPS", "LAS"):
        assert np.allclose(results[name].centroid_mm, ref.centroid_mm, atol=0.05), name
        assert abs(results[name].volume_mm3 - ref.volume_mm3) / ref.volume_mm3 < 0.01, name
