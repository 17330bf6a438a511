"""Faults injected into a simulated rig while the procedure runs: the room changes, never the procedure.

Each fault acts on the simulated devices the way the event would act on real ones: an
occluder body stands in the tracker's line of sight (PyBullet's rays hit it), the patient's
bodies and the reference clamped to them move, the arm trips its reflex, the tracker stops
answering, an exposure arrives as a damaged file, the clinician cannot find landmarks. The
procedure sees only what its sensors report. Timed faults follow the simulated clock, which
advances with every tracker frame; step triggers come from the procedure log's hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pybullet as pb

from twinsim import frames
from twinsim.scenario.schema import (
    AtStep,
    AtTime,
    Breathing,
    CollidingView,
    DamagedXray,
    MissingLandmarks,
    Occlusion,
    PatientShift,
    RobotReflex,
    TrackerSilent,
    UnreachableTarget,
)

OCCLUDER_RGBA = (0.2, 0.5, 0.9, 0.8)
OCCLUDER_THICKNESS_M = 0.03


@dataclass
class FaultState:
    fault: Any
    started_s: float | None = None  # simulated time it took effect
    ended_s: float | None = None
    armed_s: float | None = None  # step triggers: when the step's moment came
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"kind": self.fault.kind, "started_s": self.started_s, "ended_s": self.ended_s, "notes": self.notes}


class FaultInjector:
    """Applies a scenario's faults to an open simulated rig (``RigDevices`` with ``room``)."""

    def __init__(self, dev: Any, faults: list[Any]) -> None:
        if dev.room is None:
            raise ValueError("faults are injected into a simulated rig; this rig's devices are real")
        self.dev, self.room = dev, dev.room
        self.clock = dev.tracker.clock
        self.t0 = self.clock.now_s  # time triggers count from here
        self.states = [FaultState(f) for f in faults]
        self._occluders: dict[int, int] = {}  # state index -> body
        self._breath: tuple[float, Breathing] | None = None
        self._shift = np.eye(4)
        self._closed = False
        self.clock.subscribe(self._tick)

    # ---- before the procedure: the room as it stands, the devices as they will behave ----
    def views(self, views: tuple[Any, Any]) -> tuple[Any, Any]:
        """The views the procedure is asked to take, with a colliding one put in."""
        from twinsim.hal.interfaces import CArmView
        from twinsim.imaging.views import parse_view

        out = list(views)
        for s in self.states:
            if isinstance(s.fault, CollidingView):
                v = parse_view(s.fault.view)
                out[s.fault.index] = CArmView(v.name, v.lao_deg, v.cranial_deg)
                self._start(s, f"view {s.fault.index + 1} asked as {v.name}")
        return out[0], out[1]

    def before(self) -> None:
        for s in self.states:
            f = s.fault
            if isinstance(f, UnreachableTarget):
                self._move_cart(f)
                self._start(s, f"cart moved {list(f.cart_shift_m)} m, turned {f.cart_turn_deg:g} deg")
            elif isinstance(f, DamagedXray):
                self.dev.carm.damaged_exports[f.exposure] = f.damage
                self._start(s, f"exposure {f.exposure} will arrive {f.damage}")
            elif isinstance(f, MissingLandmarks):
                self.dev.operator.unmarked[f.view] = list(f.names) if f.names else None
                self._start(s, f"view {f.view}: {', '.join(f.names) if f.names else 'no landmark'} found")

    def _move_cart(self, f: UnreachableTarget) -> None:
        h = self.room.robots["operation"]
        T = frames.make_transform(frames.rotation_about_axis([0, 0, 1], np.deg2rad(f.cart_turn_deg)),
                                  [f.cart_shift_m[0], f.cart_shift_m[1], 0.0])
        base = self.room.base_pose("operation")
        pos, orn = pb.getBasePositionAndOrientation(h.body, physicsClientId=self.room.client)
        T_com = frames.pose_to_transform(pos, orn)
        # Turn about the base's own vertical, then shift: the cart rolls and turns on the floor.
        pivot = frames.make_transform(t=base[:3, 3])
        new = frames.make_transform(t=T[:3, 3]) @ pivot @ frames.make_transform(T[:3, :3]) @ frames.invert(pivot) @ T_com
        p, q = frames.transform_to_pose(new)
        pb.resetBasePositionAndOrientation(h.body, p, q, physicsClientId=self.room.client)

    # ---- while it runs -----------------------------------------------------------------
    def on_step(self, step: str, moment: str) -> None:
        for s in self.states:
            at = getattr(s.fault, "at", None)
            if isinstance(at, AtStep) and s.armed_s is None and at.step == step and at.when == moment:
                s.armed_s = self.clock.now_s
        self._tick(self.clock.now_s)

    def _due(self, s: FaultState, now_s: float) -> bool:
        at = getattr(s.fault, "at", None)
        if isinstance(at, AtTime):
            return now_s - self.t0 >= at.time_s
        if isinstance(at, AtStep):
            return s.armed_s is not None and now_s >= s.armed_s + at.after_s
        return False

    def _tick(self, now_s: float) -> None:
        if self._closed:
            return
        for i, s in enumerate(self.states):
            f = s.fault
            if s.started_s is None and self._due(s, now_s):
                self._fire(i, s, now_s)
            elif s.started_s is not None and s.ended_s is None and isinstance(f, Occlusion):
                if now_s >= s.started_s + f.duration_s:
                    self._clear_occluder(i)
                    s.ended_s = now_s
                else:
                    self._place_occluder(i, f)
        if self._breath is not None:
            t0, b = self._breath
            axis = np.asarray(b.axis, dtype=np.float64) / np.linalg.norm(b.axis)
            d = axis * b.amplitude_mm * 1e-3 * np.sin(2.0 * np.pi * (now_s - t0) / b.period_s)
            self.room.move_patient(frames.make_transform(t=d) @ self._shift)

    def _fire(self, i: int, s: FaultState, now_s: float) -> None:
        f = s.fault
        if isinstance(f, Occlusion):
            self._place_occluder(i, f)
            self._start(s, f"{f.tool} occluded for {f.duration_s:g} s", now_s)
        elif isinstance(f, PatientShift):
            c = self.room.target_world_m()
            turn = frames.make_transform(frames.rotation_about_axis([0, 0, 1], np.deg2rad(f.turn_deg)))
            about = frames.make_transform(t=c) @ turn @ frames.make_transform(t=-c)
            self._shift = frames.make_transform(t=np.asarray(f.shift_mm) * 1e-3) @ about @ self._shift
            self.room.move_patient(self._shift)
            s.ended_s = now_s
            self._start(s, f"patient moved {list(f.shift_mm)} mm, turned {f.turn_deg:g} deg", now_s)
        elif isinstance(f, Breathing):
            self._breath = (now_s, f)
            self._start(s, f"breathing {f.amplitude_mm:g} mm every {f.period_s:g} s", now_s)
        elif isinstance(f, RobotReflex):
            self.dev.arm.trip_reflex(f.why)
            s.ended_s = now_s
            self._start(s, f"reflex: {f.why}", now_s)
        elif isinstance(f, TrackerSilent):
            self.dev.tracker.answering = False
            self._start(s, "the tracker stopped answering", now_s)

    def _start(self, s: FaultState, note: str, now_s: float | None = None) -> None:
        s.started_s = self.clock.now_s if now_s is None else now_s
        s.notes.append(note)

    # ---- the occluder ----------------------------------------------------------------
    def _place_occluder(self, i: int, f: Occlusion) -> None:
        from twinsim.sim.hand_held import tool
        from twinsim.sim.markers_in_room import facing

        vega = self.dev.tracker.vega
        cam = vega.T_world_cam_m()[:3, 3]
        target = tool(vega, f.tool).T_world_tool_m()[:3, 3]
        centre = cam + f.fraction * (target - cam)
        p, q = frames.transform_to_pose(frames.make_transform(facing(cam, target), centre))
        body = self._occluders.get(i)
        if body is None:
            half = [f.size_m / 2, f.size_m / 2, OCCLUDER_THICKNESS_M / 2]
            col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, physicsClientId=self.room.client)
            vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=list(OCCLUDER_RGBA), physicsClientId=self.room.client)
            body = self._occluders[i] = pb.createMultiBody(0, col, vis, p, q, physicsClientId=self.room.client)
        else:
            pb.resetBasePositionAndOrientation(body, p, q, physicsClientId=self.room.client)

    def _clear_occluder(self, i: int) -> None:
        body = self._occluders.pop(i, None)
        if body is not None and pb.isConnected(self.room.client):
            pb.removeBody(body, physicsClientId=self.room.client)

    def close(self) -> None:
        """Stop injecting; what the faults did to the room stays (the report describes that room)."""
        self.clock.unsubscribe(self._tick)
        self._closed = True
        for i in list(self._occluders):
            self._clear_occluder(i)
        self._breath = None

    def undo(self) -> None:
        """Stop injecting and put the room back: the patient where it was built, the tracker answering, no reflex."""
        self.close()
        self.room.move_patient(np.eye(4))
        self.dev.tracker.answering = True
        self.dev.arm.recover()

    def summary(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self.states]

    def never_fired(self) -> list[str]:
        return [s.fault.kind for s in self.states if s.started_s is None]
