import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from twinsim import frames


def random_T(rng, scale=1.0):
    return frames.make_transform(Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3) * scale)


def test_inverse_and_composition_round_trip_to_1e9():
    rng = np.random.default_rng(0)
    for _ in range(200):
        T = random_T(rng, scale=500.0)  # mm-sized translations
        assert np.abs(frames.compose(T, frames.invert(T)) - np.eye(4)).max() < 1e-9
        assert np.abs(frames.compose(frames.invert(T), T) - np.eye(4)).max() < 1e-9
        p = rng.normal(size=(10, 3)) * 100
        back = frames.transform_points(frames.invert(T), frames.transform_points(T, p))
        assert np.abs(back - p).max() < 1e-9


def test_pose_quaternion_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(50):
        T = random_T(rng)
        T2 = frames.pose_to_transform(*frames.transform_to_pose(T))
        assert np.abs(T2 - T).max() < 1e-9


def test_frame_graph_composes_and_inverts_along_the_chain():
    rng = np.random.default_rng(2)
    T_world_ref, T_ref_ct, T_world_base = (random_T(rng) for _ in range(3))
    g = frames.FrameGraph()
    g.set("world", "ref", T_world_ref)
    g.set("ref", "ct", T_ref_ct)
    g.set("world", "base_op", T_world_base)
    T_base_ct = g.get("base_op", "ct")
    expected = frames.invert(T_world_base) @ T_world_ref @ T_ref_ct
    assert np.abs(T_base_ct - expected).max() < 1e-9
    assert np.abs(g.get("ct", "base_op") @ T_base_ct - np.eye(4)).max() < 1e-9
    with pytest.raises(frames.FrameError, match="unknown frame"):
        g.get("world", "cam")
    g.set("cam", "tool", np.eye(4))
    with pytest.raises(frames.FrameError, match="no chain"):
        g.get("world", "cam")


def test_malformed_transforms_are_rejected():
    with pytest.raises(frames.FrameError, match="4x4"):
        frames.as_transform(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(frames.FrameError, match="rotation"):
        frames.as_transform(bad)
    reflect = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(frames.FrameError, match="rotation"):
        frames.as_transform(reflect)


def test_rotation_about_axis_is_right_handed():
    R = frames.rotation_about_axis([0, 0, 1], np.pi / 2)
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_perpendicular_basis_completes_one_or_many_axes_right_handed():
    u = np.random.default_rng(0).normal(size=(20, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    u[0] = [1.0, 0.0, 0.0]  # the helper axis switches here
    e1, e2 = frames.perpendicular_basis(u)
    assert np.allclose(np.einsum("ij,ij->i", e1, u), 0.0) and np.allclose(np.einsum("ij,ij->i", e2, u), 0.0)
    assert np.allclose(np.cross(e1, e2), u)
    one = frames.perpendicular_basis(u[5])
    assert one[0].shape == (3,) and np.allclose(one[0], e1[5]) and np.allclose(one[1], e2[5])
