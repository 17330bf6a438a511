"""The default operating room: frames, limits, clearances, C-arm geometry, snapshot, CLI."""

import subprocess
import sys

import numpy as np
import pybullet as pb
import pytest
import yaml
from PIL import Image

from twinsim import frames
from twinsim.robot import panda
from twinsim.sim.scene_config import DEFAULT_SCENE, SceneConfigError, load_scene_config


def test_default_scene_has_no_contacts(room):
    report = room.clearance_report()
    pairs = {(c.a, c.b) for c in report}
    for robot in ("operation robot", "navigation robot"):
        for other in ("patient", "table", "carm"):
            assert (robot, other) in pairs
    for c in report:
        assert c.distance_m > 0.0, f"{c.a} touches {c.b}: {c.distance_m * 1000:.1f} mm"


def test_collision_check_detects_a_robot_in_the_patient(room):
    """The clearance query must see a real contact, or 'no contacts' above means nothing."""
    h = room.robots["operation"]
    target = room.T_world_carm[:3, 3]  # the isocenter: L1's centroid, inside the patient
    lo, hi = panda.SOFT_LIMITS_RAD.T
    q_home = room.joint_positions("operation")
    sol = pb.calculateInverseKinematics(h.body, h.link_index[panda.TOOL_TIP_LINK], target.tolist(),
                                        lowerLimits=lo.tolist(), upperLimits=hi.tolist(), jointRanges=(hi - lo).tolist(),
                                        restPoses=q_home.tolist(), maxNumIterations=300, physicsClientId=room.client)
    try:
        room.set_joint_positions("operation", np.clip(sol[:7], lo, hi))
        assert room.clearance("operation robot", "patient").colliding
    finally:
        room.set_joint_positions("operation", q_home)
    assert not room.clearance("operation robot", "patient").colliding


def test_joint_limits_are_the_datasheet_soft_limits(room):
    for name, h in room.robots.items():
        lims = np.array([pb.getJointInfo(h.body, j, physicsClientId=room.client)[8:10] for j in h.joint_indices])
        assert np.allclose(lims, panda.SOFT_LIMITS_RAD), name
        q = room.joint_positions(name)
        assert np.all(q >= panda.SOFT_LIMITS_RAD[:, 0]) and np.all(q <= panda.SOFT_LIMITS_RAD[:, 1])
        assert h.link_index.keys().isdisjoint(panda.GRIPPER_LINKS)


def test_tool_frames(room):
    g = room.frame_graph()
    cfg = room.config
    T_flange_tool = g.get("flange_op", "tool")
    length = cfg.needle_guide.adapter_length_m + cfg.needle_guide.tube_length_m
    # The guide as mounted (the scene's error budget): its bore tilted and shifted off the flange axis by the set amounts.
    tilt_deg, offset_mm = cfg.error_budget.guide_mount
    assert tilt_deg > 0 and abs(np.degrees(np.arccos(T_flange_tool[2, 2])) - tilt_deg) < 1e-3
    assert abs(T_flange_tool[2, 3] - length) < 1e-4
    assert np.linalg.norm(T_flange_tool[:2, 3]) <= offset_mm * 1e-3 + length * np.sin(np.radians(tilt_deg)) + 1e-6
    # The navigation camera stands inside the Vega's range of the target.
    T_world_cam = g.get("world", "cam")
    dist = np.linalg.norm(room.T_world_carm[:3, 3] - T_world_cam[:3, 3])
    assert 0.95 < dist < 2.4


def test_tracker_on_the_navigation_robot_sees_every_marker(room):
    from twinsim.sim.markers_in_room import room_tracker

    vega = room_tracker(room, {"seed": 3, "latency s": 0.0})
    frame = vega.get_frame()
    T_world_cam = room.link_pose("navigation", panda.CAMERA_LINK)
    assert len(frame[0]) == len(room.config.markers) == 5
    for T, tool in zip(frame[3], vega.tools, strict=True):
        assert np.isfinite(T).all(), f"{tool.marker.name} not tracked"
        true = frames.scale_translation(frames.invert(T_world_cam) @ tool.T_world_tool_m(), 1000.0)
        assert np.linalg.norm(T[:3, 3] - true[:3, 3]) < 0.5  # mm, from 0.12 mm sphere noise
        assert 950.0 < np.linalg.norm(true[:3, 3]) < 2400.0


def test_patient_is_prone_on_the_table(room):
    axes_posterior = room.T_world_ct[:3, :3] @ [0.0, -1.0, 0.0]
    assert np.allclose(axes_posterior, [0, 0, 1], atol=1e-9)  # posterior side up
    skin_w = frames.transform_points(room.T_world_ct, room.patient.skin.vertices_mm * 1e-3)
    assert abs(skin_w[:, 2].min() - room.config.table.top_height_m) < 1e-9
    # Spinous processes (posterior) are above the vertebral body's centroid.
    l1 = frames.transform_points(room.T_world_ct, room.patient.vertebra("L1").vertices_mm * 1e-3)
    assert l1[:, 2].max() - room.T_world_carm[2, 3] > 0.03


def test_carm_source_and_detector_follow_the_angles(room):
    geom = room.config.carm.geometry
    try:
        for lao, cran in ((0, 0), (90, 0), (-30, 15), (45, -20)):
            room.set_carm_angles(lao, cran)
            g = room.frame_graph()
            src, det = g.get("world", "source")[:3, 3], g.get("world", "detector")[:3, 3]
            assert abs(np.linalg.norm(det - src) - geom.sdd_mm * 1e-3) < 1e-9
            assert abs(np.linalg.norm(room.T_world_carm[:3, 3] - src) - geom.sid_mm * 1e-3) < 1e-9
            # The body's pose is the geometry's pose.
            pos, orn = pb.getBasePositionAndOrientation(room.carm_body, physicsClientId=room.client)
            assert np.abs(frames.pose_to_transform(pos, orn) - room.T_world_carm).max() < 1e-6
        iso = room.T_world_carm[:3, 3]
        room.set_carm_angles(90, 0)  # LAO 90: detector on the patient's left (+y with the head at +x)
        assert np.allclose(room.frame_graph().get("world", "detector")[:3, 3] - iso, [0, 0.4, 0], atol=1e-9)
        room.set_carm_angles(0, 30)  # cranial: detector tilts towards the head (+x)
        assert (room.frame_graph().get("world", "detector")[:3, 3] - iso)[0] > 0.19
    finally:
        room.set_carm_angles(room.config.carm.lao_deg, room.config.carm.cranial_deg)


def test_snapshot_is_not_blank(room, tmp_path):
    from twinsim.sim.snapshot import write_snapshot

    path = write_snapshot(room, tmp_path / "scene.png", "test")
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert img.shape[0] > 400 and img.shape[1] > 600
    assert img.std() > 20
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 200
    # The target vertebra is drawn in red in the anatomy panel.
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 50


def _write_scene(tmp_path, mutate):
    data = yaml.safe_load(DEFAULT_SCENE.read_text())
    mutate(data)
    p = tmp_path / "scene.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_scene_file_errors_name_the_key(tmp_path):
    with pytest.raises(SceneConfigError, match="scene file not found"):
        load_scene_config(tmp_path / "none.yaml")
    p = _write_scene(tmp_path, lambda d: d["table"].pop("top_height_m"))
    with pytest.raises(SceneConfigError, match="missing key 'table.top_height_m'"):
        load_scene_config(p)
    p = _write_scene(tmp_path, lambda d: d["robots"]["operation"].__setitem__("base_xyz_m", [1, 2]))
    with pytest.raises(SceneConfigError, match="robots.operation.base_xyz_m' must be a list of 3"):
        load_scene_config(p)
    p = _write_scene(tmp_path, lambda d: d["carm"].__setitem__("sid_mm", 2000.0))
    with pytest.raises(SceneConfigError, match="source-isocenter"):
        load_scene_config(p)
    # Validated with pydantic: a misspelt key is an error, not silently ignored.
    p = _write_scene(tmp_path, lambda d: d["table"].__setitem__("top_heigth_m", 1.0))
    with pytest.raises(SceneConfigError, match="unknown key 'table.top_heigth_m' \\(misspelt\\?\\)"):
        load_scene_config(p)
    p = _write_scene(tmp_path, lambda d: d["markers"]["pointer"].__setitem__("tipp_mm", [0, 0, 0]))
    with pytest.raises(SceneConfigError, match="unknown key 'markers.pointer.tipp_mm'"):
        load_scene_config(p)
    p = _write_scene(tmp_path, lambda d: d["patient"].__setitem__("source", {"ct": "a.nii"}))
    with pytest.raises(SceneConfigError, match="missing key 'patient.source.labels'"):
        load_scene_config(p)


def test_home_pose_outside_soft_limits_is_refused(tmp_path, example_patient_model):
    from twinsim.sim.world import build_operating_room

    def bad(d):
        d["robots"]["operation"]["home_q_rad"][3] = 0.0  # joint 4 soft limit is [-3.0718, -0.0698]

    with pytest.raises(SceneConfigError, match="joint 4 = 0.0000 not in"):
        build_operating_room(_write_scene(tmp_path, bad), patient=example_patient_model)


def test_cli_help_and_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("rehearse", "scene", "patient", "bench", "fetch-example"):
        assert cmd in out.stdout
    bad = subprocess.run([sys.executable, "-m", "twinsim.cli", "scene", "--scene", str(tmp_path / "x.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "scene file not found" in bad.stderr and "Traceback" not in bad.stderr

