"""FrankyArm, the real Franka driver, against franky-sim (libfranka's protocol on loopback)."""

import time

import franky  # a hard dependency (franky-control): a broken install fails here, it is not skipped
import numpy as np
import pytest
from protocol_check import implements

from twinsim.bench.peers import franky_sim, loopback_address
from twinsim.hal import Arm, ConnectionLost, HalError, LimitViolation, MotionAborted
from twinsim.hal.real.franky_arm import FrankyArm, translate_franky_error


@pytest.fixture(scope="module")
def robot_peer():
    with franky_sim(loopback_address(1)) as peer:
        yield peer


@pytest.fixture(scope="module")
def arm(robot_peer):
    a = FrankyArm(robot_peer.host, "operation", realtime=False)  # franky-sim does not run on a realtime kernel
    yield a
    a.close()


@pytest.mark.timeout(120)
def test_reads_joints_and_flange_pose(arm):
    assert implements(arm, Arm) == []
    q = arm.read_joints_rad()
    assert q.shape == (7,) and np.isfinite(q).all()
    T = arm.flange_pose_m()
    assert T.shape == (4, 4) and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    assert 0.2 < np.linalg.norm(T[:3, 3]) < 1.2  # an FR3 flange is within reach of its base


@pytest.mark.timeout(120)
def test_joint_move_and_waypoint_path(arm):
    q0 = arm.read_joints_rad()
    q1 = q0 + np.array([0.25, -0.1, 0.0, 0.1, 0.0, 0.1, 0.0])
    arm.move_joints(q1, speed_factor=0.5)
    assert not arm.is_moving()
    # franky-sim's MuJoCo joint controller leaves a steady error of a few hundredths of a radian.
    q = arm.read_joints_rad()
    np.testing.assert_allclose(q, q1, atol=0.06)
    assert q[0] - q0[0] > 0.18
    arm.follow_joint_path([q0, q1, q0], speed_factor=0.5)
    np.testing.assert_allclose(arm.read_joints_rad(), q0, atol=0.06)
    with pytest.raises(LimitViolation, match="speed factor"):
        arm.move_joints(q0, speed_factor=1.5)


@pytest.mark.timeout(120)
def test_stop_during_a_move_is_motion_aborted(arm):
    q0 = arm.read_joints_rad()
    arm.move_joints(q0 + np.array([0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), speed_factor=0.1, asynchronous=True)
    time.sleep(0.4)
    assert arm.is_moving()
    arm.stop()
    with pytest.raises(MotionAborted, match="stopped"):
        arm.wait(timeout_s=5.0)
    assert abs(arm.read_joints_rad()[0] - q0[0]) < 0.6  # stopped on the way, not at the goal
    arm.recover()
    arm.move_joints(q0, speed_factor=0.5)


@pytest.mark.timeout(60)
def test_server_killed_mid_move_is_connection_lost_within_2_s():
    with franky_sim(loopback_address(2)) as peer:
        a = FrankyArm(peer.host, "operation", realtime=False)
        q0 = a.read_joints_rad()
        a.move_joints(q0 + np.array([0.8, 0, 0, 0, 0, 0, 0]), speed_factor=0.1, asynchronous=True)
        time.sleep(0.3)
        peer.kill()
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match="operation: connection lost"):
            a.wait(timeout_s=5.0)
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(ConnectionLost):
            a.read_joints_rad()


@pytest.mark.parametrize(("exc", "kind", "words"), [
    (lambda f: f.ControlException('libfranka: Move command aborted: motion aborted by reflex! ["cartesian_reflex"]'),
     MotionAborted, "collision reflex"),
    (lambda f: f.ControlException('libfranka: Move command aborted: motion aborted by reflex! ["joint_position_limits_violation"]'),
     LimitViolation, "limit violation"),
    (lambda f: f.ControlException("libfranka: Move command preempted!"), MotionAborted, "stopped"),
    (lambda f: f.NetworkException("libfranka: UDP receive: Timeout"), ConnectionLost, "connection lost"),
    (lambda f: RuntimeError("Net Exception"), ConnectionLost, "connection lost"),
    (lambda f: f.CommandException("libfranka: command rejected"), MotionAborted, "motion aborted"),
])
def test_franky_exceptions_map_to_hal_errors(exc, kind, words):
    # franky-sim raises no reflex or limit errors, so these are raised directly.
    err = translate_franky_error("operation", exc(franky))
    assert type(err) is kind and words in str(err) and err.device == "operation"
    assert isinstance(err, HalError)


@pytest.mark.timeout(30)
def test_no_robot_at_the_address_is_connection_lost():
    with pytest.raises(ConnectionLost, match="cannot connect to the robot at 127.0.0.254"):
        FrankyArm("127.0.0.254", realtime=False)
