"""Simulated NDI Polaris Vega and marker tools."""

import json

import numpy as np
import pybullet as pb
import pytest
from sksurgerynditracker.nditracker import NDITracker

from twinsim import frames
from twinsim.tracking.markers import MARKERS_DIR, MarkerError, check_distinguishable, load_marker
from twinsim.tracking.vega_sim import VEGA_RMS_MM, SimulatedTool, SimulatedVega

FACING_CAMERA = frames.make_transform(frames.rotation_about_axis([1, 0, 0], np.pi), [0.0, 0.0, 0.0])
CAMERA_BELOW = frames.make_transform(np.eye(3), [0.0, 0.0, -1.5])  # 1.5 m away, looking along +z


def is_missing(T):
    """sksurgerycore's convention (shared by the real NDITracker): NaN pose rows, [0, 0, 0, 1] kept."""
    return bool(np.isnan(T[:3]).all())


def make_vega(pose=lambda: FACING_CAMERA, client=None, **config):
    cfg = {"seed": 1, "latency s": 0.0, **config}
    v = SimulatedVega(cfg, [SimulatedTool(1, load_marker("pointer"), pose)], lambda: CAMERA_BELOW, client)
    v.start_tracking()
    return v


def test_get_frame_has_nditrackers_structure():
    real = NDITracker({"tracker type": "dummy", "romfiles": [str(MARKERS_DIR / "pointer.json")]})
    ref = real.get_frame()
    ours = make_vega().get_frame()
    assert len(ours) == len(ref) == 5
    for a, b in zip(ours, ref, strict=True):
        assert isinstance(a, list) and len(a) == len(b) == 1
    for i in (1, 2, 4):  # time stamps, frame numbers, quality
        assert type(ours[i][0]) is type(ref[i][0])
    assert ours[3][0].shape == ref[3][0].shape == (4, 4) and ours[3][0].dtype == ref[3][0].dtype
    q = make_vega(**{"use quaternions": True}).get_frame()[3][0]
    assert q.shape == (1, 7) and abs(np.linalg.norm(q[0, :4]) - 1) < 1e-9  # qw, qx, qy, qz, x, y, z
    assert make_vega().get_tool_descriptions() == ([1], ["pointer"])


def test_noise_matches_the_vega_specification():
    v = make_vega(seed=7)
    err, pos = [], []
    for _ in range(3000):
        f = v.get_frame()
        true, measured, visible = v.last_spheres[1]
        assert visible.all()
        err.append(measured - true)
        pos.append(f[3][0][:3, 3])
    rms = np.sqrt((np.concatenate(err) ** 2).sum(axis=1).mean())
    assert abs(rms - VEGA_RMS_MM) < 0.1 * VEGA_RMS_MM
    # The fitted tool position averages the sphere noise: unbiased and tighter than one sphere.
    pos = np.array(pos)
    assert np.linalg.norm(pos.mean(0) - [0.0, 0.0, 1500.0]) < 0.01
    assert np.sqrt(((pos - pos.mean(0)) ** 2).sum(1).mean()) < VEGA_RMS_MM


def test_systematic_error_does_not_average_out_and_is_sized_to_the_spec():
    """The budget's tracker: white jitter plus a smooth position-dependent field; together the specified RMS."""
    from twinsim.tracking.vega_sim import SystematicField

    field = SystematicField(0.11, 400.0, seed=3)
    rng = np.random.default_rng(0)
    p = rng.uniform([-600, -500, 950], [600, 500, 2400], (20000, 3))  # the Vega's volume, roughly
    e = field(p)
    assert abs(np.sqrt((e**2).sum(1).mean()) - 0.11) < 0.02
    near = field(p + rng.normal(0, 5.0, p.shape))  # 5 mm away: nearly the same error (smooth)
    assert np.sqrt(((near - e) ** 2).sum(1).mean()) < 0.02
    # A static marker averaged over 300 frames: white noise alone averages away, the field stays.
    means = {}
    for rms in (0.0, 0.11):
        v = make_vega(seed=7, **{"noise rms mm": 0.045, "systematic rms mm": rms, "systematic seed": 3})
        means[rms] = np.mean([v.get_frame()[3][0][:3, 3] for _ in range(300)], axis=0)
    assert np.linalg.norm(means[0.0] - [0.0, 0.0, 1500.0]) < 0.01
    assert np.linalg.norm(means[0.11] - [0.0, 0.0, 1500.0]) > 0.02


def test_marker_spheres_off_their_definition_are_measured_where_they_are():
    offsets = np.random.default_rng(2).normal(0, 0.1, (4, 3))
    v = SimulatedVega({"seed": 1, "latency s": 0.0, "noise rms mm": 0.0},
                      [SimulatedTool(1, load_marker("pointer"), lambda: FACING_CAMERA, offsets)], lambda: CAMERA_BELOW)
    v.start_tracking()
    f = v.get_frame()
    true, measured, _ = v.last_spheres[1]
    np.testing.assert_allclose(measured, true, atol=1e-9)
    assert f[4][0] > 0.01  # the fit's RMS residual shows the spheres are not where the definition says


def test_occluded_tool_is_missing_with_nan_not_stale():
    client = pb.connect(pb.DIRECT)
    try:
        v = make_vega(client=client)
        assert np.isfinite(v.get_frame()[3][0]).all()
        col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=[0.2, 0.2, 0.01], physicsClientId=client)
        wall = pb.createMultiBody(0, col, basePosition=[0, 0, -0.7], physicsClientId=client)
        f = v.get_frame()
        assert is_missing(f[3][0]) and np.isnan(f[4][0])
        pb.removeBody(wall, physicsClientId=client)
        assert np.isfinite(v.get_frame()[3][0]).all()
        # Half the spheres hidden: fewer than 3 visible -> missing; one hidden -> still tracked.
        col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=[0.2, 0.2, 0.01], physicsClientId=client)
        edge = np.sort(load_marker("pointer").spheres_mm[:, 0] * 1e-3)
        wall = pb.createMultiBody(0, col, basePosition=[(edge[0] + edge[1]) / 2 - 0.2, 0, -0.3], physicsClientId=client)
        v.get_frame()
        _, _, visible = v.last_spheres[1]
        assert visible.sum() == 3 and np.isfinite(v.get_frame()[3][0]).all()
    finally:
        pb.disconnect(client)


def test_tool_outside_the_measurement_volume_is_missing():
    too_close = frames.make_transform(FACING_CAMERA[:3, :3], [0.0, 0.0, -1.0])  # 0.5 m from the camera
    f = make_vega(pose=lambda: too_close).get_frame()
    assert is_missing(f[3][0])


def test_frame_counter_and_latency():
    state = {"T": FACING_CAMERA}
    v = make_vega(pose=lambda: state["T"], **{"latency s": 0.05})  # 3 frames at 60 Hz
    out = []
    for k in range(8):
        if k == 4:
            state["T"] = frames.make_transform(FACING_CAMERA[:3, :3], [0.01, 0.0, 0.0])  # moves 10 mm
        out.append(v.get_frame())
    assert [f[2][0] for f in out][3:] == list(range(0, 5))  # frame numbers of the measurements, 60 Hz
    assert all(is_missing(f[3][0]) for f in out[:3])  # nothing has arrived yet
    x = [f[3][0][0, 3] for f in out[3:]]
    assert all(abs(xi) < 0.5 for xi in x[:4]) and abs(x[4] - 10.0) < 0.5  # the move shows 3 frames late
    assert out[-1][1][0] == pytest.approx(out[-1][2][0] / 60.0)


def test_marker_files_are_distinguishable_and_checked(tmp_path):
    markers = [load_marker(p) for p in sorted(MARKERS_DIR.glob("*.json"))]
    assert {m.name for m in markers} >= {"patient_reference", "operation_flange", "needle_guide", "carm", "pointer"}
    check_distinguishable(markers)
    for m in markers:
        assert len(m.spheres_mm) == 4 and m.sphere_diameter_mm == 11.5
    with pytest.raises(MarkerError, match="near-identical"):
        check_distinguishable([markers[0], markers[0]])
    bad = tmp_path / "line.json"
    bad.write_text(json.dumps({"spheres_mm": [[0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]]}))
    with pytest.raises(MarkerError, match="collinear"):
        load_marker(bad)
    with pytest.raises(MarkerError, match="not found"):
        load_marker("no_such_tool")
