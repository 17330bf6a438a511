"""The simulated drivers behind the HAL: timed motion, tracking while moving, collision reflex, errors."""

import numpy as np
import pytest
from protocol_check import implements

from twinsim.hal import Arm, CArm, CArmView, LimitViolation, MotionAborted, Tracker
from twinsim.hal.sim.arm import SimArm
from twinsim.hal.sim.clock import SimClock
from twinsim.hal.sim.tracker import SimTracker
from twinsim.hal.sim.trajectory import JointTrajectory
from twinsim.robot import panda
from twinsim.sim.markers_in_room import room_tracker
from twinsim.sim.world import build_operating_room
from twinsim.twin.tracker_view import ToolIndex


@pytest.fixture(scope="module")
def rig(example_patient_model):
    room = build_operating_room(patient=example_patient_model)
    clock = SimClock()
    arm = SimArm(room, clock)
    tracker = SimTracker(room_tracker(room, {"seed": 4}), clock)
    yield room, clock, arm, tracker
    arm.close()
    room.close()


@pytest.fixture
def home(rig):
    room, _, arm, _ = rig
    yield arm.read_joints_rad()
    arm.recover()
    room.set_joint_positions("operation", room.robots["operation"].config.home_q_rad)


def test_trajectory_respects_velocity_and_acceleration_limits():
    q0 = np.zeros(7)
    q1 = np.array([1.0, -0.5, 0.3, -1.0, 0.2, 1.5, -0.7])
    for f in (0.2, 1.0):
        traj = JointTrajectory(q0, [q1], f)
        t = np.linspace(0, traj.duration_s, 2001)
        q = np.array([traj.at(x) for x in t])
        v = np.diff(q, axis=0) / np.diff(t)[:, None]
        a = np.diff(v, axis=0) / np.diff(t)[1:, None]
        assert np.all(np.abs(v).max(0) <= panda.VELOCITY_LIMITS_RAD_S * f * 1.01)
        assert np.all(np.abs(a).max(0) <= panda.ACCELERATION_LIMITS_RAD_S2 * f * 1.05)
        # The limiting joint runs at its limit: the duration is the shortest the limits allow.
        assert np.abs(v).max(0)[np.argmax(np.abs(q1) / panda.VELOCITY_LIMITS_RAD_S)] > 0.9 * panda.VELOCITY_LIMITS_RAD_S[0] * f or \
            np.abs(a).max() > 0.9 * f * panda.ACCELERATION_LIMITS_RAD_S2.min()
        np.testing.assert_allclose(q[0], q0)
        np.testing.assert_allclose(q[-1], q1)
    assert JointTrajectory(q0, [q1], 0.2).duration_s > 4 * JointTrajectory(q0, [q1], 1.0).duration_s


def test_a_move_takes_simulated_time_and_the_tracker_sees_it_move(rig, home):
    room, clock, arm, tracker = rig
    assert implements(arm, Arm) == [] and implements(tracker, Tracker) == []
    idx = ToolIndex(tracker)
    q0 = home
    target = q0 + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    t0 = clock.now_s
    arm.move_joints(target, speed_factor=0.5, asynchronous=True)
    assert arm.is_moving()
    positions = []
    while arm.is_moving():
        f = tracker.get_frame()  # each frame is 1/60 s of simulated time
        positions.append(idx.pose([f], "operation_flange")[:3, 3] if np.isfinite(np.asarray(f[3][idx.handle["operation_flange"] - 1])).all() else None)
    duration = clock.now_s - t0
    expected = JointTrajectory(q0, [target], 0.5).duration_s
    assert abs(duration - expected) < 2 / 60
    seen = np.array([p for p in positions if p is not None])
    assert len(seen) > 10
    steps = np.linalg.norm(np.diff(seen, axis=0), axis=1)
    assert steps.max() < 0.25 * np.linalg.norm(seen[-1] - seen[0])  # intermediate poses, not a jump
    np.testing.assert_allclose(arm.read_joints_rad(), target, atol=3e-3)  # within the arm's repeatability


def test_collision_reflex_stops_the_arm_at_the_contact(rig, home):
    room, clock, arm, _ = rig
    q_bad = home + np.array([-0.8, 0.8, 0.0, 0.6, 0.0, 0.0, 0.0])  # reaches out and swings into the C-arm
    with pytest.raises(MotionAborted, match="motion aborted \\(collision reflex\\): contact with"):
        arm.move_joints(q_bad, speed_factor=0.5)
    assert arm.has_error() and arm.contact
    q_stop = arm.read_joints_rad()
    assert np.linalg.norm(q_stop - home) > 0.05 and np.linalg.norm(q_stop - q_bad) > 0.1  # stopped on the way
    assert arm._contact() is None  # stopped short of the contact, not inside it
    with pytest.raises(MotionAborted, match="recover"):
        arm.move_joints(home)
    arm.recover()
    arm.move_joints(home, speed_factor=0.5)
    assert not arm.has_error()


def test_put_back_restores_the_arm_after_a_stop_mid_motion(rig, home):
    """What a bench does between cases: the arm back at its true start, at rest and out of error."""
    room, clock, arm, _ = rig
    physical = room.joint_positions("operation")
    arm.follow_joint_path([home + np.array([0.3, 0.2, 0.0, 0.2, 0.0, 0.0, 0.0])], 0.3, asynchronous=True)
    clock.advance(0.3)
    arm.trip_reflex("a push on link 4")
    assert arm.has_error() and not np.allclose(room.joint_positions("operation"), physical)
    arm.put_back(physical)
    assert not arm.has_error() and not arm.is_moving()
    np.testing.assert_allclose(room.joint_positions("operation"), physical, atol=1e-9)
    arm.move_joints(home, speed_factor=0.5)  # it takes commands again


def test_stop_and_limits(rig, home):
    _, clock, arm, tracker = rig
    arm.move_joints(home + np.array([0.4, 0, 0, 0, 0, 0, 0]), speed_factor=0.2, asynchronous=True)
    for _ in range(20):
        tracker.get_frame()
    arm.stop()
    with pytest.raises(MotionAborted, match="stopped"):
        arm.wait(1.0)
    assert not arm.has_error()  # a stop is not a fault
    assert 0.01 < arm.read_joints_rad()[0] - home[0] < 0.39
    assert arm.wait(0.1) is True
    with pytest.raises(LimitViolation, match="joint 4 = 0.5000 not in"):
        arm.move_joints(np.array([0, 0, 0, 0.5, 0, 1.0, 0]))
    with pytest.raises(LimitViolation, match="speed factor"):
        arm.move_joints(home, speed_factor=0.0)
    with pytest.raises(LimitViolation, match="7 joint values"):
        arm.follow_joint_path([np.zeros(6)])


def test_wait_with_a_timeout_returns_false_mid_motion(rig, home):
    _, clock, arm, _ = rig
    arm.move_joints(home + np.array([0.5, 0, 0, 0, 0, 0, 0]), speed_factor=0.1, asynchronous=True)
    assert arm.wait(timeout_s=0.2) is False and arm.is_moving()
    assert arm.wait() is True


def test_waypoint_path_passes_every_waypoint(rig, home):
    _, _, arm, _ = rig
    w1 = home + np.array([0.2, 0, 0, 0, 0, 0, 0])
    w2 = home + np.array([0.2, 0.1, 0, 0, 0, 0, 0])
    seen = []
    arm.follow_joint_path([w1, w2, home], speed_factor=0.5, asynchronous=True)
    while arm.is_moving():
        arm.clock.advance(1 / 240)
        seen.append(arm.read_joints_rad())
    seen = np.array(seen)
    for w in (w1, w2):
        assert np.min(np.linalg.norm(seen - w, axis=1)) < 0.01


def test_sim_carm_turns_and_refuses_a_colliding_view(rig):
    from twinsim.hal.sim.carm import SimCArm

    room = rig[0]
    carm = SimCArm(room, size_px=64, n_samples=64)
    assert implements(carm, CArm) == []
    carm.move_to(CArmView("LAT", 90.0, 0.0))
    acq = carm.acquire()
    assert acq.image.shape == (64, 64) and acq.view["name"] == "LAT" and acq.image.std() > 0.01
    with pytest.raises(MotionAborted, match="cannot turn to"):
        carm.move_to(CArmView("into the table", 0.0, 80.0))
    assert carm.view.name == "LAT"
    carm.move_to(CArmView("AP", 0.0, 0.0))


def test_the_interface_check_catches_a_driver_that_drifted_from_its_protocol():
    from twinsim.hal import Arm

    class Drifted:
        name = "x"

        def read_joints_rad(self):
            return None

        def move_joints(self, q_rad):  # lost speed_factor and asynchronous
            pass

    problems = implements(Drifted(), Arm)
    assert "move_joints() takes no 'speed_factor'" in problems and "no method stop" in problems
