"""Motion in the twin: dense checks refuse before any motion, the guarded arm sends only checked paths,
interlocks stop the arm, the placement search recommends where both paths reach."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from twinsim import frames

pytestmark = pytest.mark.slow


class SpyArm:
    """Counts what reaches the driver; delegates everything to the simulated arm."""

    def __init__(self, arm):
        self.arm, self.name, self.commands = arm, arm.name, []

    def move_joints(self, q, speed_factor=0.2, asynchronous=False):
        self.commands.append(("move_joints", np.asarray(q)))
        self.arm.move_joints(q, speed_factor, asynchronous)

    def follow_joint_path(self, waypoints, speed_factor=0.2, asynchronous=False):
        self.commands.append(("follow_joint_path", len(waypoints)))
        self.arm.follow_joint_path(waypoints, speed_factor, asynchronous)

    def __getattr__(self, name):
        return getattr(self.arm, name)


@pytest.fixture(scope="module")
def surveyed(example_patient_model, tmp_path_factory):
    """The default sim rig, its committed calibration, and a rehearsal surveyed up to the twin's collision world
    (the vertebra's axis taken from the truth: these tests are about motion, not reconstruction)."""
    from twinsim.evaluation.placement_truth import true_T_world_ref_mm
    from twinsim.hal.rig import load_rig
    from twinsim.procedure.rehearsal import Registration, RehearsalSettings
    from twinsim.rigs.open_rig import new_rehearsal, open_rig
    from twinsim.twin.calibration_set import load_calibration
    from twinsim.twin.tracker_view import ToolIndex
    from twinsim.workflows.calibration import read_frames

    rig = load_rig(None)
    dev = open_rig(rig, progress=False)
    r = new_rehearsal(dev, tmp_path_factory.mktemp("rehearsal"), RehearsalSettings(), load_calibration(rig.calibration), None)
    r.log.run("calibration", "calibration", r._calibrate)
    room = dev.room
    T_ref_ct = frames.invert(true_T_world_ref_mm(dev.tracker.vega)) @ frames.scale_translation(room.T_world_ct, 1000.0)
    mesh = room.patient.vertebra("L1")
    c = frames.transform_points(T_ref_ct, mesh.centroid_mm)
    sup = T_ref_ct[:3, :3] @ np.array([0.0, 0.0, 1.0])  # RAS superior
    T_cam_ref = ToolIndex(dev.tracker).pose(read_frames(dev.tracker, 10), "patient_reference")
    r.reg = Registration(T_cam_ref, [], [], landmarks={"superior_endplate_centre": c + 10 * sup,
                                                        "inferior_endplate_centre": c - 10 * sup})  # the spine's axis
    r.log.run("survey", "survey", r._survey)
    # Both paths as the planner makes them on the true surface (the clinician's landmarks, mapped into ref).
    from twinsim.planning.planner import plan_vertebra

    marks = {k: frames.transform_points(T_ref_ct, v) for k, v in dev.operator.landmarks_of_level("L1").items()}
    true_plan = plan_vertebra(frames.transform_points(T_ref_ct, mesh.vertices_mm), mesh.faces, marks, frame="ref")
    paths = {side: (p.entry_mm, p.target_mm) for side, p in true_plan.paths.items()}
    r.reg.plan = SimpleNamespace(paths={k: SimpleNamespace(entry_mm=e, target_mm=t, axis=(t - e) / np.linalg.norm(t - e))
                                        for k, (e, t) in paths.items()})
    yield r, dev, T_ref_ct
    r.world.close()
    dev.close()


def test_a_path_through_the_carm_is_refused_before_any_motion(surveyed):
    from twinsim.hal.interfaces import CArmView
    from twinsim.motion.guarded_arm import GuardedArm
    from twinsim.motion.planner import MotionRefused
    from twinsim.workflows.tracked_xray import acquire_tracked

    r, dev, _ = surveyed
    acq = acquire_tracked(dev.carm, dev.tracker, r.cal.carm, CArmView("AP", 0.0, 0.0))
    dev.carm.park()
    T_source = np.linalg.inv(acq.geometry.T_source_frame_mm)  # where the tracker saw the C-arm's focal spot
    world = r.world
    q0 = dev.arm.read_joints_rad()
    base = world.T_ref_base_m[:3, 3] * 1000.0
    # Slide the C-arm from where it was seen towards the robot until a swing of the arm about its base would cross it.
    placed = None
    for shift_mm in range(0, 1200, 50):
        T = T_source.copy()
        d = base - T_source[:3, 3]
        d -= (d @ r.reg.table.up) * r.reg.table.up
        T[:3, 3] += d / np.linalg.norm(d) * shift_mm
        world.set_carm(T)
        if world.contacts(q0)[0] is not None:
            continue
        for swing in (0.9, -0.9):
            q1 = q0.copy()
            q1[0] += swing
            if world.contacts(q1)[0] is None and not world.check_path([q0, q1]).ok:
                placed = (T, q1)
                break
        if placed:
            break
    assert placed is not None, "no C-arm placement puts it in the way of a swing"
    T_in_the_way, q1 = placed
    world.set_carm(T_in_the_way)
    try:
        spy = SpyArm(dev.arm)
        guarded = GuardedArm(spy, world)
        with pytest.raises(MotionRefused) as e:
            guarded.move_joints(q1)
        msg = str(e.value)
        assert "C-arm" in msg and "waypoint" in msg and "mm" in msg, msg
        assert spy.commands == [], "the driver saw a command the twin refused"
        assert e.value.check.contact.clearance_mm < r.s.clearance.robot_mm
        assert 0.0 < e.value.check.waypoint < 1.0
        assert guarded.log.refused and not guarded.log.sent
    finally:
        world.park_carm()


def test_the_guide_through_the_patient_envelope_is_refused_and_a_clear_approach_is_accepted(surveyed):
    from twinsim.motion.docking import plan_dock, tool_frame
    from twinsim.motion.guarded_arm import GuardedArm
    from twinsim.motion.planner import MotionRefused

    r, dev, _ = surveyed
    q0 = dev.arm.read_joints_rad()
    p = r.reg.plan.paths["right"]
    dock = plan_dock(r.planner, "right", p.entry_mm, p.target_mm, r.reg.envelope, [q0])
    # 40 mm deeper than the dock: the guide itself inside the patient.
    T_deep = tool_frame(dock.T_dock_mm[:3, 3] + p.axis * (r.s.dock.dock_standoff_mm + 40.0), p.axis, np.deg2rad(dock.roll_deg))
    q_deep = r.planner.ik_tool(T_deep, dock.q_dock_rad)
    spy = SpyArm(dev.arm)
    guarded = GuardedArm(spy, r.world)
    with pytest.raises(MotionRefused, match="patient envelope"):
        guarded.follow_joint_path([dock.q_approach_rad, q_deep])
    assert spy.commands == []
    motion = r.planner.plan("to the approach pose", q0, dock.q_approach_rad)
    assert motion.check.ok and motion.timing.duration_s > 0 and motion.timing.max_off_path_rad < 1e-9
    guarded.follow_joint_path(motion.waypoints_rad[1:])
    assert spy.commands and dev.arm.contact is None
    assert np.max(np.abs(dev.arm.read_joints_rad() - dock.q_approach_rad)) < 0.01
    back = r.planner.plan("back home", dev.arm.read_joints_rad(), q0)  # around the body past the touches if need be
    guarded.follow_joint_path(back.waypoints_rad[1:])  # checked too
    assert len(guarded.log.sent) == 2 and guarded.log.unchecked == 0
    assert np.max(np.abs(dev.arm.read_joints_rad() - q0)) < 0.01


def test_rrt_connect_plans_around_what_blocks_the_direct_path(surveyed):
    from twinsim.motion.planner import MotionPlanner

    r, dev, _ = surveyed
    world = r.world
    q0 = dev.arm.read_joints_rad()
    q1 = q0.copy()
    q1[0] += 1.6  # swing the arm about its base
    mid = (q0 + q1) / 2
    T_mid = frames.scale_translation(world.T_ref_base_m, 1000.0) @ frames.scale_translation(
        r.planner.model.fk_m(mid, "panda_link7"), 1000.0)
    import pybullet as pb

    from twinsim.robot.bodies import box_body

    wall = box_body(world.client, [0.08, 0.08, 0.08], (T_mid[:3, 3] * 1e-3).tolist(), (1, 0, 0, 1))
    world.names[wall] = "test obstacle"
    try:
        assert world.contacts(q0)[0] is None and world.contacts(q1)[0] is None
        planner = MotionPlanner(world, r.planner.model, r.cal.T_flange_tool, ompl_time_s=10.0)
        m = planner.plan("around the obstacle", q0, q1)
        assert m.method == "RRT-Connect" and m.refused_first is not None and "test obstacle" in m.refused_first.describe()
        assert world.check_path(m.waypoints_rad).ok
    finally:
        pb.removeBody(wall, physicsClientId=world.client)
        del world.names[wall]


def test_a_motion_that_would_hide_the_guide_marker_goes_around_or_is_refused(surveyed):
    """The interlock stops the arm when the guide's marker is lost for 7 frames; the twin plans so it is not."""
    import pybullet as pb

    from twinsim.motion.planner import MotionPlanner, MotionRefused, SightLine
    from twinsim.robot.bodies import box_body

    r, dev, _ = surveyed
    world = r.world
    sight = r._sight_line()
    assert sight is not None and sight.spheres_marker_mm is not None, "the guide is tracked at the start pose"
    T_tool_marker, cam = sight.T_tool_marker_mm, sight.camera_ref_mm
    planner = MotionPlanner(world, r.planner.model, r.cal.T_flange_tool, ompl_time_s=10.0)
    q0 = dev.arm.read_joints_rad()
    q1 = q0.copy()
    q1[0] += 0.8 if q0[0] < 0 else -0.8
    assert world.check_path([q0, q1]).ok
    assert all(planner.marker_in_sight(q, sight) for q in (q0, q1))
    # A box hung in the lines of sight half-way along the swing, 250 mm from the marker towards the camera: the
    # smallest that hides the marker there and not at either end.
    mid = (planner.tool_pose_mm((q0 + q1) / 2) @ T_tool_marker)[:3, 3]
    at = mid + (cam - mid) / np.linalg.norm(cam - mid) * 250.0
    box = None
    for size_m in (0.05, 0.07, 0.09, 0.11, 0.13):
        box = box_body(world.client, [size_m] * 3, (at * 1e-3).tolist(), (1, 0, 0, 1))  # the twin's world is ref, in m
        hides = not planner.marker_in_sight((q0 + q1) / 2, sight)
        if hides or not all(planner.marker_in_sight(q, sight) for q in (q0, q1)):
            break
        pb.removeBody(box, physicsClientId=world.client)
    assert hides and all(planner.marker_in_sight(q, sight) for q in (q0, q1)), size_m
    world.names[box] = "test occluder"
    try:
        assert world.contacts(q0)[0] is None and world.contacts(q1)[0] is None
        assert planner.plan("swing, sight not watched", q0, q1).method == "direct"
        planner.sight = sight
        m = planner.plan("swing", q0, q1)
        assert m.method == "RRT-Connect" and "hidden from the camera" in (m.blind_first or ""), m.summary()
        assert planner.blind_stretch(m.timing) is None and world.check_path(m.waypoints_rad).ok
        qs, _ = m.timing.configurations_at(60.0)
        assert sum(not planner.marker_in_sight(q) for q in qs) <= sight.max_blind_frames
        # A camera the goal pose cannot see: no path can keep the marker in sight, so none is sent.
        goal = (planner.tool_pose_mm(q1) @ T_tool_marker)[:3, 3]
        z = -(at - mid) / np.linalg.norm(at - mid)  # the camera looks back at the goal's marker from 1.5 m
        x = np.cross([0.0, 0.0, 1.0] if abs(z[2]) < 0.9 else [1.0, 0.0, 0.0], z)
        x /= np.linalg.norm(x)
        planner.sight = SightLine(T_tool_marker, frames.make_transform(np.column_stack([x, np.cross(z, x), z]), goal - z * 1500.0),
                                  sight.spheres_marker_mm)
        pb.resetBasePositionAndOrientation(box, ((planner.tool_pose_mm(q1) @ T_tool_marker)[:3, 3]
                                                 + (at - mid) / np.linalg.norm(at - mid) * 250.0) * 1e-3,
                                           [0, 0, 0, 1], physicsClientId=world.client)
        with pytest.raises(MotionRefused, match="goal pose itself hides it"):
            planner.plan("swing into the shadow", q0, q1)
    finally:
        pb.removeBody(box, physicsClientId=world.client)
        del world.names[box]


def test_tracking_lost_mid_motion_stops_the_arm(surveyed):
    from twinsim.motion.execution import TrackingLostDuringMotion, Watch, run_watched
    from twinsim.motion.guarded_arm import GuardedArm

    r, dev, _ = surveyed
    q0 = dev.arm.read_joints_rad()
    q1 = q0.copy()
    q1[0] -= 0.4

    class Dropout:
        """The needle guide's marker occluded from the 30th frame on (someone stepped in front of the camera)."""

        def __init__(self, tracker):
            self.tracker, self.n = tracker, 0
            handles, names = tracker.get_tool_descriptions()
            self.handle = dict(zip(names, handles, strict=True))["needle_guide"]

        def get_frame(self):
            f = self.tracker.get_frame()
            self.n += 1
            if self.n >= 30:
                i = list(f[0]).index(self.handle)
                f[3][i] = np.full((4, 4), np.nan)
            return f

        def __getattr__(self, name):
            return getattr(self.tracker, name)

    assert r.world.check_path([q0, q1]).ok
    watch = Watch(Dropout(dev.tracker), r.reg.T_cam_ref_mm)
    with pytest.raises(TrackingLostDuringMotion, match="needle_guide lost"):
        run_watched(GuardedArm(dev.arm, r.world), [q1], watch, 0.2, "a test motion")
    q_stop = dev.arm.read_joints_rad()
    assert not dev.arm.is_moving()
    assert np.abs(q_stop[0] - q1[0]) > 0.05, "the arm went on to its goal"
    dev.arm.recover()
    dev.arm.move_joints(q0)


def test_a_moved_patient_reference_is_caught_before_motion(surveyed):
    from twinsim.motion.execution import ReferenceMoved, Watch
    from twinsim.sim.hand_held import hold, tool
    from twinsim.workflows.calibration import read_frames

    r, dev, _ = surveyed
    ref = tool(dev.tracker.vega, "patient_reference")
    T = ref.T_world_tool_m() if callable(ref.T_world_tool_m) else ref.T_world_tool_m
    previous = hold(ref, frames.make_transform(T[:3, :3], T[:3, 3] + [0.0, 0.003, 0.0]))  # bumped 3 mm
    try:
        watch = Watch(dev.tracker, r.reg.T_cam_ref_mm)
        with pytest.raises(ReferenceMoved, match="register the patient again"):
            watch.check_reference(read_frames(dev.tracker, 10), "before a test motion")
    finally:
        ref.T_world_tool_m = previous
    Watch(dev.tracker, r.reg.T_cam_ref_mm).check_reference(read_frames(dev.tracker, 10), "after")  # back: no alarm


def test_an_unreachable_path_gives_the_placement_recommendation(surveyed):
    from twinsim.motion.placement import PlacementSettings
    from twinsim.motion.planner import MotionPlanner, Unreachable
    from twinsim.motion.twin_world import TwinWorld

    r, dev, _ = surveyed
    table = r.reg.table
    # The twin told the robot stands 30 cm further towards the feet than it does: both docks out of reach.
    T_far = r.cal.T_ref_base.copy()
    T_far[:3, 3] -= table.long_axis * 300.0
    world = TwinWorld(dev.room_model, T_far, table, r.s.clearance)
    world.set_envelope(r.reg.envelope)
    saved = (r.world, r.planner, r.s)
    try:
        r.world = world
        r.planner = MotionPlanner(world, dev.model, r.cal.T_flange_tool)
        r.reg.acquisitions = []
        r.s = dataclasses.replace(r.s, placement=PlacementSettings(along_m=(0.0, 0.15, 0.3), toward_m=(0.0,), turns_deg=(0.0,)))
        with pytest.raises(Unreachable, match="Recommendation: move the operation robot's cart"):
            r._reach(SimpleNamespace(figures={}, outputs=[]))
        rec = r.log.recommendation
        assert rec["along_m"] >= 0.15 and rec["limit_margin_rad"] >= r.s.placement.min_limit_margin_rad
        assert "towards the head" in rec["advice"]
    finally:
        r.world, r.planner, r.s = saved
        world.close()


def test_dense_check_speed_is_reported_for_200_waypoints(surveyed):
    """Not a timing assert: the check covers every configuration it is given and names the bodies it knows."""
    r, dev, _ = surveyed
    q0 = dev.arm.read_joints_rad()
    q1 = q0 + np.r_[0.5, 0.2, 0.0, 0.3, 0.0, 0.2, 0.0]
    path = list(np.linspace(q0, q1, 200))
    check = r.world.check_path(path)
    assert check.configurations >= 200
    assert {"patient envelope", "table", "navigation robot"} <= set(check.bodies)







def test_the_twin_also_keeps_the_patient_reference_in_the_trackers_view(surveyed):
    """The interlock stops the arm when the reference is lost as when the guide is: the twin judges both."""
    import pybullet as pb

    from twinsim.robot.bodies import box_body

    r, dev, _ = surveyed
    sight = r._sight_line()
    assert sight is not None and sight.reference_spheres_ref_mm is not None
    q0 = dev.arm.read_joints_rad()
    assert r.planner.hidden_marker(q0, sight) is None
    ref = sight.reference_spheres_ref_mm.mean(axis=0)
    cam = sight.camera_ref_mm
    at = ref + (cam - ref) / np.linalg.norm(cam - ref) * 300.0  # a hand between the camera and the reference only
    box = box_body(r.world.client, [0.12] * 3, (at * 1e-3).tolist(), (1, 0, 0, 1))
    try:
        assert r.planner.hidden_marker(q0, sight) == "the patient reference"
        assert r.planner.hidden_marker(q0, dataclasses.replace(sight, reference_spheres_ref_mm=None)) is None
    finally:
        pb.removeBody(box, physicsClientId=r.world.client)
    assert r.planner.hidden_marker(q0, sight) is None
