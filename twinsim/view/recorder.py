"""Recording the twin's state while a procedure runs, from what the procedure itself reads.

The recorder never asks a device for a frame: it sits behind the tracker port (:class:`TappedTracker`)
and sees each frame the procedure reads, at most ``rate_hz`` of them per second of tracker time. A
simulated tracker's clock advances with every frame read, so a recorder that read frames of its own
would change the rehearsal it records. With each kept frame it reads the operation robot's joints (a
reading, which moves nothing). Layers come from the rehearsal's record at each step's end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.hal.interfaces import Arm, Tracker
from twinsim.tracking.tools import REFERENCE
from twinsim.twin.tracker_view import ToolIndex, TrackingLost, tool_poses
from twinsim.view.timeline import Event, Timeline

DEFAULT_RATE_HZ = 30.0
PATH_OUT_MM = 60.0  # a path is drawn from this far out along its axis before the entry, to the target


def path_start_mm(entry_mm: np.ndarray, target_mm: np.ndarray) -> np.ndarray:
    """Where a drawn path starts: ``PATH_OUT_MM`` back from the entry along the axis (outside the skin)."""
    axis = (target_mm - entry_mm) / np.linalg.norm(target_mm - entry_mm)
    return entry_mm - axis * PATH_OUT_MM


class TappedTracker:
    """A tracker that hands each frame it returns to ``listener`` first; otherwise the tracker it wraps."""

    def __init__(self, tracker: Tracker, listener: Callable[[tuple], None]) -> None:
        self._tracker, self._listener = tracker, listener
        self.faults: list[str] = []  # what the listener raised: a recording's fault never reaches the frame's reader

    def start_tracking(self) -> None:
        self._tracker.start_tracking()

    def stop_tracking(self) -> None:
        self._tracker.stop_tracking()

    def get_frame(self) -> tuple[list, list, list, list, list]:
        f = self._tracker.get_frame()
        try:
            self._listener(f)
        except Exception as exc:  # noqa: BLE001
            if len(self.faults) < 10:
                self.faults.append(f"{type(exc).__name__}: {exc}")
        return f

    def get_tool_descriptions(self) -> tuple[list, list]:
        return self._tracker.get_tool_descriptions()

    def close(self) -> None:
        self._tracker.close()


class TwinRecorder:
    """The timeline of one procedure; ``listeners`` (a live view) are told of each new sample, event and layer."""

    def __init__(self, tracker: Tracker, arm: Arm, room_model: Any = None, rate_hz: float = DEFAULT_RATE_HZ,
                 rig: str = "", wrap: Callable[[TappedTracker], Tracker] | None = None) -> None:
        """``wrap``: how the wiring hands the tapped tracker on (behind a port, as every device the procedure gets)."""
        if not rate_hz > 0:
            raise ValueError(f"the recording rate must be > 0 Hz, got {rate_hz}")
        self._tools = ToolIndex(tracker)
        self.timeline = Timeline(sorted(self._tools.handle), float(rate_hz), rig)
        self.arm, self.room_model = arm, room_model
        self._tap = TappedTracker(tracker, self._frame)
        self.tracker: Tracker = wrap(self._tap) if wrap is not None else self._tap  # what the procedure reads through
        self._last_t = -np.inf
        self._frames = 0
        self._T_cam_ref: np.ndarray | None = None  # the reference where it was last seen (or registered)
        self.listeners: list[Callable[[str, Any], None]] = []

    @property
    def faults(self) -> list[str]:
        """What the recording raised while a frame was read (never passed on to the frame's reader)."""
        return list(self._tap.faults)

    # ---- samples ------------------------------------------------------------------------
    def _pose(self, f: tuple, name: str) -> np.ndarray | None:
        """The tool's pose in this frame (camera frame, mm), or None where the tracker did not see it."""
        try:
            T = tool_poses([f], self._tools.handle[name])[0]
        except TrackingLost:
            return None
        return T if np.isfinite(T[:3]).all() else None

    def _frame(self, f: tuple) -> None:
        self._frames += 1
        stamps = [float(t) for t in (f[1] or []) if t is not None and np.isfinite(t)]
        t = stamps[0] if stamps else self._frames / 60.0
        if t - self._last_t < 1.0 / self.timeline.rate_hz - 1e-9:
            return
        self._last_t = t
        T_cam_ref = self._pose(f, REFERENCE)
        if T_cam_ref is not None:
            self._T_cam_ref = T_cam_ref
        poses = np.full((len(self.timeline.tools), 4, 4), np.nan)
        if self._T_cam_ref is not None:
            T_ref_cam = frames.invert(self._T_cam_ref)
            for k, name in enumerate(self.timeline.tools):
                T = T_cam_ref if name == REFERENCE else self._pose(f, name)
                if T is not None:
                    poses[k] = T_ref_cam @ T
        try:
            q = np.asarray(self.arm.read_joints_rad(), dtype=np.float64)
        except Exception:  # noqa: BLE001 (a robot that does not answer now is shown as unknown, not as an error)
            q = np.full(7, np.nan)
        k = self.timeline.add_sample(t, q, poses, T_cam_ref)
        self._tell("sample", k)

    def _tell(self, what: str, payload: Any) -> None:
        for listener in list(self.listeners):
            listener(what, payload)

    # ---- events and layers ----------------------------------------------------------------
    def event(self, step: str, title: str, state: str, summary: str = "") -> None:
        t = self.timeline.t_s[-1] if self.timeline.t_s else 0.0
        e = Event(len(self.timeline), t, step, title, state, summary)
        self.timeline.events.append(e)
        self._tell("event", e)

    def layers_from(self, record: Any) -> None:
        """Every layer a ``procedure.rehearsal.RehearsalRecord`` holds now (a new version only where it changed)."""
        changed = []
        for name, arrays in layers_of(record.calibration, record.registration, record.world, self.room_model,
                                      record.docks).items():
            if self.timeline.set_layer(name, arrays):
                changed.append(name)
        if record.registration is not None:
            self._T_cam_ref = self._T_cam_ref if self._T_cam_ref is not None else record.registration.T_cam_ref_mm
        for name in changed:
            self._tell("layer", name)


def layers_of(cal: Any, reg: Any, world: Any, room_model: Any, docks: Any = None) -> dict[str, dict[str, np.ndarray]]:
    """The layers of what the twin knows, in ``ref`` (mm); never the room's truth.

    ``cal``: a ``twin.calibration_set.CalibrationSet``; ``reg``: the rehearsal's ``Registration``; ``world``: the
    twin's ``motion.twin_world.TwinWorld``; ``room_model``: the room's datasheet ``motion.room_model.RoomModel``;
    ``docks``: side -> ``motion.docking.DockPlan``. Each may be None. Typed loosely: the view sits below the layers that define them (the procedure records into it).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    if cal is not None:
        out["robot_base"] = {"T_ref_base_mm": np.asarray(cal.T_ref_base, dtype=np.float64)}
        out["guide_calibration"] = {"needle_tip_mm": np.asarray(cal.needle_tip_mm, dtype=np.float64),
                                    "needle_axis": np.asarray(cal.needle_axis, dtype=np.float64)}
        if cal.carm is not None and room_model is not None:
            T_marker_body = cal.carm.T_marker_source_mm @ frames.invert(frames.scale_translation(room_model.T_carm_source_m, 1000.0))
            sizes = np.array([np.asarray(s, dtype=np.float64) * 1000.0 for s, _ in room_model.carm_boxes_m]).reshape(-1, 3)
            Ts = np.array([T_marker_body @ frames.scale_translation(T, 1000.0) for _, T in room_model.carm_boxes_m]).reshape(-1, 4, 4)
            out["carm_shape"] = {"sizes_mm": sizes, "T_marker_box_mm": Ts}
    if room_model is not None:
        g, c = room_model.needle_guide, room_model.tracker_camera
        out["robot_models"] = {"needle_guide": np.array([g.adapter_length_m, g.adapter_diameter_m, g.tube_length_m,
                                                          g.tube_outer_diameter_m, g.channel_diameter_m, g.mass_kg]),
                               "camera_model": np.array(c.model), "camera_size_m": np.asarray(c.size_m, dtype=np.float64),
                               "camera_mount": np.array([c.mount_offset_m, c.mass_kg])}
    if reg is not None:
        out["camera"] = {"T_ref_cam_mm": frames.invert(reg.T_cam_ref_mm)}
        xrays = _xray_layer(reg)
        if xrays:
            out["xrays"] = xrays
        r = reg.reconstruction
        if r is not None and getattr(r, "frame", "ref") == "ref":
            out["vertebra"] = {"vertices_mm": np.asarray(r.vertices_mm, dtype=np.float32), "faces": np.asarray(r.faces, dtype=np.int32)}
        if reg.plan is not None:
            sides = sorted(reg.plan.paths)
            p = [reg.plan.paths[s] for s in sides]
            out["paths"] = {"sides": np.array(sides), "entry_mm": np.array([x.entry_mm for x in p]),
                            "target_mm": np.array([x.target_mm for x in p]),
                            "start_mm": np.array([path_start_mm(x.entry_mm, x.target_mm) for x in p]),
                            "safe": np.array([bool(x.safe) for x in p])}
    if docks:
        sides = sorted(docks)
        out["docks"] = {"sides": np.array(sides), "T_dock_mm": np.array([docks[s].T_dock_mm for s in sides])}
    if world is not None:
        if world.table is not None:
            boxes = world.table.boxes_m()
            out["table"] = {"sizes_mm": np.array([np.asarray(s) * 1000.0 for s, _, _ in boxes]),
                            "T_ref_box_mm": np.array([frames.scale_translation(T, 1000.0) for _, T, _ in boxes])}
        meshes = world.envelope_meshes
        if meshes:
            verts, faces, offset = [], [], 0
            for _, v, f in meshes:
                verts.append(v)
                faces.append(np.asarray(f) + offset)
                offset += len(v)
            out["envelope"] = {"vertices_mm": np.concatenate(verts).astype(np.float32), "faces": np.concatenate(faces).astype(np.int32)}
        if world.navigation_pose is not None:
            T_ref_nav_base_m, q_nav = world.navigation_pose
            out["navigation"] = {"T_ref_base_mm": frames.scale_translation(T_ref_nav_base_m, 1000.0), "q_rad": np.asarray(q_nav)}
    return out


XRAY_PANEL_PX = 384  # the X-ray panels' longer side: the view shows them small beside the scene


def _xray_layer(reg: Any) -> dict[str, np.ndarray]:
    """Both X-rays (8-bit, at most ``XRAY_PANEL_PX``), and each planned path's projection onto each of them (from
    :func:`path_start_mm` to the target), in the panels' pixels."""
    acqs = list(getattr(reg, "acquisitions", None) or [])[:2]
    if not acqs:
        return {}
    out: dict[str, np.ndarray] = {}
    scales = []
    for i, a in enumerate(acqs):
        img = np.clip(np.nan_to_num(np.asarray(a.image, dtype=np.float64)), 0.0, 1.0)
        step = max(1, int(np.ceil(max(img.shape) / XRAY_PANEL_PX)))
        out[f"image_{i}"] = (img[::step, ::step] * 255).astype(np.uint8)
        scales.append(1.0 / step)
    out["scale"] = np.array(scales)
    out["names"] = np.array([str(a.view.get("name", f"view {i + 1}")) if isinstance(a.view, dict) else f"view {i + 1}"
                             for i, a in enumerate(acqs)])
    plan = getattr(reg, "plan", None)
    if plan is not None:
        sides = sorted(plan.paths)
        uv = np.zeros((len(acqs), len(sides), 2, 2))
        for i, a in enumerate(acqs):
            for j, side in enumerate(sides):
                p = plan.paths[side]
                uv[i, j] = a.geometry.project(np.array([path_start_mm(p.entry_mm, p.target_mm), p.target_mm])) * scales[i]
        out["paths_uv"], out["sides"] = uv, np.array(sides)
    return out
