"""Rig files, the C-arm image folder driver, calibration through the HAL, and the layering contracts."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from twinsim.hal import CArmView, ConnectionLost, HalError, RigFileError
from twinsim.hal.rig import DEFAULT_RIG, HARDWARE_DIR, LabRig, SimRig, load_rig

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, data, name="rig.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_rigs_load_and_resolve_paths():
    sim = load_rig(DEFAULT_RIG)
    assert isinstance(sim, SimRig) and sim.scene == (ROOT / "scenarios" / "rooms" / "default.yaml").resolve()
    lab = load_rig(HARDWARE_DIR / "lab.example.yaml")
    assert isinstance(lab, LabRig) and lab.tracker.port == 8765
    assert lab.tracker.tools["pointer"] == (HARDWARE_DIR / "tools" / "pointer.rom").resolve()
    assert lab.robots["operation"].hostname == "172.16.0.2"


def test_misspelt_unknown_and_missing_keys_are_errors(tmp_path):
    lab = yaml.safe_load((HARDWARE_DIR / "lab.example.yaml").read_text())
    bad = json.loads(json.dumps(lab))
    bad["tracker"]["ip_adress"] = bad["tracker"].pop("ip_address")
    with pytest.raises(RigFileError, match=r"unknown key 'tracker\.ip_adress' \(misspelt\?\)") as e:
        load_rig(_write(tmp_path, bad))
    assert "missing key 'tracker.ip_address'" in str(e.value)
    bad = json.loads(json.dumps(lab))
    bad["tracker"]["tools"]["scalpel"] = "x.rom"
    with pytest.raises(RigFileError, match="unknown tool names \\['scalpel'\\]"):
        load_rig(_write(tmp_path, bad))
    bad = json.loads(json.dumps(lab))
    bad["robots"]["operation"]["hostname"] = 12
    bad["tracker"]["port"] = 70000
    with pytest.raises(RigFileError, match="robots.operation.hostname.*tracker.port"):
        load_rig(_write(tmp_path, bad))
    with pytest.raises(RigFileError, match="kind"):
        load_rig(_write(tmp_path, {"format": "twinsim-rig/1", "name": "x", "kind": "spaceship"}))
    with pytest.raises(RigFileError, match="rig file not found"):
        load_rig(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("kind: [sim")
    with pytest.raises(RigFileError, match="not valid YAML"):
        load_rig(tmp_path / "broken.yaml")


def _carm_calibration(tmp_path, w=40, h=30):
    T = np.eye(4)
    T[:3, 3] = [0, -600, 0]
    doc = {"format": "twinsim-carm-calibration/1", "frame": "ref",
           "views": {"AP": {"lao_deg": 0, "cranial_deg": 0,
                            "geometry": {"sdd_mm": 1000.0, "width_px": w, "height_px": h, "pixel_spacing_mm": [1.0, 1.0],
                                         "T_frame_source_mm": T.tolist()}}}}
    p = tmp_path / "carm_calibration.json"
    p.write_text(json.dumps(doc))
    return p


def test_folder_carm_reads_dicom_and_png_with_calibrated_geometry(tmp_path):
    import pydicom
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from twinsim.hal.real.folder_carm import FolderCArm

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"")  # there before the session: never taken as a new image
    carm = FolderCArm(folder, _carm_calibration(tmp_path), timeout_s=0.5)
    with pytest.raises(HalError, match="before move_to"):
        carm.acquire()
    with pytest.raises(HalError, match="no calibrated geometry for view 'LAT'"):
        carm.move_to(CArmView("LAT", 90, 0))
    carm.move_to(CArmView("AP", 0, 0))
    with pytest.raises(ConnectionLost, match="no image arrived"):
        carm.acquire()

    pixels = (np.arange(30 * 40).reshape(30, 40) % 4000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(folder / "shot1.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 30, 40, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(folder / "shot1.dcm", enforce_file_format=True)
    acq = carm.acquire()
    assert acq.image.shape == (30, 40) and acq.geometry.sdd_mm == 1000.0 and acq.geometry.frame == "ref"
    np.testing.assert_allclose(acq.image, (pixels - pixels.min()) / (pixels.max() - pixels.min()), atol=1e-6)
    assert pydicom.dcmread(folder / "shot1.dcm").Rows == 30

    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(folder / "shot2.png")
    with pytest.raises(HalError, match="10x10 px; the calibration of AP is 40x30"):
        carm.acquire()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_calibration_through_the_hal_matches_the_direct_session(example_patient_model, tmp_path):
    from room_calibration import run_calibration as run_direct

    from twinsim.rigs.open_rig import open_rig
    from twinsim.robot.nominal import NominalPanda
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.robot_driver import SimulatedArm
    from twinsim.sim.world import build_operating_room
    from twinsim.workflows.calibration import SessionSettings, run_calibration

    s = SessionSettings(seed=0, pivot_poses=40, tip_pivot_poses=15, hand_eye_poses=10, surface_points=20)  # the rig's seed
    with open_rig(load_rig(DEFAULT_RIG)) as dev:
        t0 = dev.tracker.clock.now_s
        cal = run_calibration(dev.arm, dev.tracker, dev.model, dev.operator, dev.registration, s, progress=False)
        moved_s = dev.tracker.clock.now_s - t0
    room = build_operating_room(patient=example_patient_model)
    with room, NominalPanda(room.config.needle_guide) as model:
        direct = run_direct(room, room_tracker(room, {"seed": 0}), SimulatedArm(room), model, s)
    r, d = cal.residuals, direct.residuals
    # The same people and sensors: identical pivots; the timed arm lands as the instant one does.
    assert r["pointer_pivot"]["rms_mm"] == pytest.approx(d["pointer_pivot"]["rms_mm"], rel=1e-6)
    assert r["tcp_pivot"]["rms_mm"] == pytest.approx(d["tcp_pivot"]["rms_mm"], rel=1e-6)
    assert r["hand_eye"]["poses"] == d["hand_eye"]["poses"] >= 6
    assert r["hand_eye"]["rms_mm"] == pytest.approx(d["hand_eye"]["rms_mm"], rel=0.05)
    assert r["surface"]["rms_mm"] < 0.5 and r["paired_point"]["tracked"] == 5
    np.testing.assert_allclose(cal.T_ref_base[:3, 3], direct.T_ref_base[:3, 3], atol=1.0)
    assert moved_s > 5.0  # the hand-eye poses took simulated time: real motions, not jumps


def test_calibrate_command_refuses_a_bad_rig(tmp_path):
    bad = _write(tmp_path, {"format": "twinsim-rig/1", "name": "x", "kind": "sim", "seed": 0, "sede": 1})
    r = subprocess.run([sys.executable, "-m", "twinsim.cli", "calibrate", "--rig", str(bad), "-o", str(tmp_path / "c.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key 'sede'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.json").exists()
    # The C-arm step alone adds to a calibration file: without one it says so before opening any device.
    r = subprocess.run([sys.executable, "-m", "twinsim.cli", "calibrate", "carm", "-o", str(tmp_path / "c.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "run `twinsim calibrate` first" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_layering_contracts_hold_and_catch_a_workflow_importing_a_simulated_device(tmp_path):
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    ok = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert "The twin's side reaches devices only through the HAL KEPT" in ok.stdout
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "twinsim", copy / "twinsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    wf = copy / "twinsim" / "workflows" / "calibration.py"
    wf.write_text(wf.read_text() + "\nfrom twinsim.hal.sim.arm import SimArm  # noqa: E402,F401\n")
    bad = subprocess.run([lint], cwd=copy, capture_output=True, text=True, timeout=240,
                         env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert bad.returncode != 0
    assert "The twin's side reaches devices only through the HAL BROKEN" in bad.stdout
