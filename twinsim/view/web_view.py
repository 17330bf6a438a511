"""A web view of the twin (viser: three.js in the browser, served from Python), live or in replay.

It draws a :class:`~twinsim.view.timeline.Timeline` at one sample: both robots from their joint readings
(the navigation robot where the survey placed it), every tracked tool from the tracker, the reconstructed
vertebra, both planned paths, the patient envelope and the table from the survey, the C-arm from its
tracked marker, and the tracker's measurement volume. A tool the tracker did not see at that sample is
grey and labelled missing. Every layer can be switched off in the panel, which also lists the
procedure's steps with their state. The scene is in metres, in the patient reference frame ``ref``.

Live, a :class:`~twinsim.view.recorder.TwinRecorder` tells the view of each sample (drawn at most
``max_rate_hz`` times a second of wall time), step and layer. In replay a slider picks the sample.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.view.timeline import Event, Timeline

LAYERS = {  # scene root: the panel's label
    "robots": "robots (joint readings)",
    "tools": "tracked tools",
    "vertebra": "reconstructed vertebra",
    "paths": "planned paths",
    "envelope": "patient envelope",
    "table": "table",
    "carm": "C-arm (tracked)",
    "volume": "tracker's measurement volume",
    "guidance": "guidance (the target as a ghost guide)",
}
SIDE_RGB = {"left": (220, 40, 40), "right": (40, 80, 230)}
MISSING_RGB = (150, 150, 150)
TRUTH_RGB = (230, 180, 0)  # the truth layer: gold wireframe, unlike anything the twin draws
BAND_RGB = {"on target": (40, 190, 70), "close": (240, 170, 30), "far": (220, 50, 40), "not tracked": MISSING_RGB}
TOOL_RGB = (40, 170, 60)
BONE_RGB = (235, 225, 200)
SKIN_RGB = (230, 170, 140)
TABLE_RGB = (120, 120, 130)
ROBOT_RGB = {"operation": (255, 150, 40), "navigation": (200, 200, 210)}
STATE_MARK = {"running": "...", "done": "ok", "failed": "FAILED"}


_pose = frames.to_wxyz_position_m  # a ref pose in mm as the scene takes it


def guide_tube(radius_m: float, length_m: float) -> Any:
    """A needle guide's tube as a trimesh: its tip at the origin, the tube behind it, z along the bore."""
    import trimesh

    tube = trimesh.creation.cylinder(radius=radius_m, height=length_m)
    tube.apply_translation((0.0, 0.0, -length_m / 2))
    return tube


@dataclass(frozen=True)
class CameraPose:
    position_m: np.ndarray
    look_at_m: np.ndarray
    up: np.ndarray
    fov_rad: float = np.deg2rad(50.0)


def default_camera(timeline: Timeline, sample: int) -> CameraPose:
    """From above the patient's far side, facing the operation robot, looking at the target (or the reference)."""
    base = timeline.layer_at("robot_base", sample)
    paths = timeline.layer_at("paths", sample)
    target = paths["target_mm"].mean(0) * 1e-3 if paths is not None else np.zeros(3)
    if base is None:
        return CameraPose(target + np.array([1.2, 0.0, 1.0]), target, np.array([0.0, 0.0, 1.0]))
    T = base["T_ref_base_mm"]
    up = T[:3, 2] / np.linalg.norm(T[:3, 2])
    across = T[:3, 3] * 1e-3 - target
    across -= (across @ up) * up
    across /= max(np.linalg.norm(across), 1e-9)
    long = np.cross(up, across)
    # Facing the operation robot across the table, a little along the patient: the robot does not hide the back.
    return CameraPose(target - across * 1.2 + long * 0.4 + up * 1.0, target, up)


class TwinView:
    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_rate_hz: float = 30.0) -> None:
        import viser

        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.server.gui.configure_theme(show_logo=False, show_share_button=False)
        self.server.gui.main_panel.dock_right()  # beside the scene, not over it (the browser test crops the canvas)
        # Plain lights, no shadows, no environment map: nothing the twin shows needs them, and a browser without a GPU
        # paints the scene 3.6 times as often without them (measured in headless Chromium, 1280 x 800, software WebGL).
        self.server.scene.configure_default_lights(True, cast_shadow=False)
        self.server.scene.configure_environment_map(None)
        # What the environment map gave: light from every side, so that no face of a body is drawn near black.
        self.server.scene.add_light_ambient("/lights/ambient", intensity=1.2)
        self.url = f"http://{host}:{self.server.get_port()}"
        self.max_rate_hz = max_rate_hz
        self._lock = threading.RLock()
        self._drawn: dict[str, int] = {}  # layer -> id of the version drawn
        self._urdf: dict[str, Any] = {}  # viser's handles: untyped here
        self._tool_nodes: dict[str, tuple[Any, Any, Any]] = {}  # name -> (its frame, seen, missing)
        self._placed: dict[str, tuple[bool, np.ndarray | None]] = {}  # what was last sent for each tool
        self._carm_nodes: tuple[Any, Any, Any] | None = None
        self._steps_text = ""
        self.timeline: Timeline | None = None
        self.sample = -1
        self.q_shown_rad: np.ndarray | None = None  # the operation robot's configuration as drawn
        self.missing_shown: list[str] = []
        self._draws: collections.deque[float] = collections.deque()  # when the last draws were (perf_counter s)
        self._pending = False
        self._closed = False
        self.camera: CameraPose | None = None
        # When the twin knew what is drawn (wall clock, UTC): a person sees how current the picture is, and a
        # browser can time the twin-to-browser latency from it (twinsim bench view).
        self._asof_md = self.server.gui.add_markdown("twin: (nothing yet)")
        self._known_at = time.time()
        self._roots = {name: self.server.scene.add_frame(f"/{name}", show_axes=False) for name in LAYERS}
        self._bases = {"operation": self.server.scene.add_frame("/robots/operation", show_axes=False),
                       "navigation": self.server.scene.add_frame("/robots/navigation", show_axes=False, visible=False)}
        self._truth_source: Any = None  # the truth layer's source (simulation only), once attached
        self._truth_drawn = False
        self.truth_shown: dict[str, np.ndarray] | None = None  # what the truth layer drew last
        with self.server.gui.add_folder("Layers") as self._layers_folder:
            for name, label in LAYERS.items():
                self._layer_box(name, self.server.gui.add_checkbox(label, initial_value=True))
        with self.server.gui.add_folder("Procedure"):
            self._steps_md = self.server.gui.add_markdown("(no step yet)")
        with self.server.gui.add_folder("Guidance"):
            self._guidance_md = self.server.gui.add_markdown("(no guide being placed)")
        self._ghosts: dict[str, Any] = {}
        self.guidance: Any = None  # the last guidance.Guidance drawn
        with self.server.gui.add_folder("Current step"):
            self._step_md = self.server.gui.add_markdown("-")
        self._xray_folder = self.server.gui.add_folder("X-rays")
        with self._xray_folder:
            self._xray_md = self.server.gui.add_markdown("(no X-ray yet)")
            self._xray_images: list[Any] = []
        self.slider: Any = None
        self.on_show: list[Any] = []  # called with (timeline, sample) after each draw: the OpenIGTLink bridge
        self.on_close: list[Any] = []  # what closes with the view (the bridge)
        self.manipulation: Any = None  # the virtual guide's panel, once attached

    def _layer_box(self, name: str, box: Any) -> None:
        """The panel's checkbox shows or hides the layer's root."""

        def toggled(_event: Any) -> None:
            self._roots[name].visible = box.value

        box.on_update(toggled)

    # ---- wiring --------------------------------------------------------------------------
    def follow(self, recorder) -> None:  # noqa: ANN001 (a TwinRecorder; typed loosely to keep viser out of its import)
        """Live: draw the recorder's timeline as it grows."""
        self.timeline = recorder.timeline
        recorder.listeners.append(self._told)
        threading.Thread(target=self._flush, name="view-flush", daemon=True).start()

    def _flush(self) -> None:
        """Live: a sample held back by the rate limit is drawn once the limit allows, so the view never stays behind."""
        while not self._closed:
            time.sleep(0.25 / self.max_rate_hz)
            if self._pending and self._may_draw(time.perf_counter()):
                self._told("flush", None)

    def _may_draw(self, now: float) -> bool:
        """At most ``max_rate_hz`` draws in any second: samples at that rate are all drawn, whatever their jitter."""
        while self._draws and now - self._draws[0] >= 1.0:
            self._draws.popleft()
        return len(self._draws) < self.max_rate_hz

    def _told(self, what: str, payload: object) -> None:
        if what == "sample":
            self._known_at = time.time()
        now = time.perf_counter()
        if what == "sample" and not self._may_draw(now):
            self._pending = True
            return
        self._draws.append(now)
        self._pending = False
        assert self.timeline is not None
        self.show(len(self.timeline) - 1)

    def replay(self, timeline: Timeline) -> None:
        """Replay: a slider over the samples and a play button."""
        self.timeline = timeline
        n = max(len(timeline) - 1, 0)
        with self.server.gui.add_folder("Replay"):
            self.slider = self.server.gui.add_slider("sample", 0, n, 1, n)
            play = self.server.gui.add_button("play")
            self._time_md = self.server.gui.add_markdown("")
        self.slider.on_update(lambda _e: self._shown_now(int(self.slider.value)))
        play.on_click(lambda _e: threading.Thread(target=self._play, daemon=True).start())
        self.show(n)

    def _shown_now(self, sample: int) -> None:
        self._known_at = time.time()
        self.show(sample)

    def _play(self) -> None:
        tl = self.timeline
        assert tl is not None and self.slider is not None
        for k in range(0, len(tl), 2):
            self.slider.value = k
            time.sleep(1.0 / self.max_rate_hz)

    def attach_manipulator(self, manipulator, presets: dict[str, np.ndarray] | None = None):  # noqa: ANN001, ANN201
        """Virtual-to-real: a gizmo on a virtual guide, checked in the twin by ``manipulator`` (a
        :class:`~twinsim.view.manipulation.GuideManipulator`), moved only after the check and a confirmation."""
        from twinsim.view.gizmo import ManipulationPanel

        panel = ManipulationPanel(self.server, manipulator, presets)
        self.on_close.append(panel.close)
        self.manipulation = panel
        return panel

    def attach_truth(self, source: Any) -> None:
        """In simulation, for teaching: the true bone and the guide's true pose from ``source`` (a callable, behind a
        port, that evaluation code provides), as a layer marked TRUTH, off by default and redrawn with every draw
        while shown. A lab rig has no source, and the view no such layer."""
        self._truth_source = source
        self._truth_root = self.server.scene.add_frame("/truth", show_axes=False, visible=False)
        with self._layers_folder:
            box = self.server.gui.add_checkbox("TRUTH (simulation only, for teaching)", initial_value=False)

        def toggled(_event: Any) -> None:
            self._truth_root.visible = box.value
            if box.value:
                self._draw_truth()

        box.on_update(toggled)
        self.truth_box = box

    def _draw_truth(self) -> None:
        if self._truth_source is None or not self._truth_root.visible:
            return
        a = self._truth_source()
        if not self._truth_drawn:
            self.server.scene.add_mesh_simple("/truth/vertebra", a["vertebra_vertices_mm"] * 1e-3, a["vertebra_faces"],
                                              color=TRUTH_RGB, wireframe=True)
            self.server.scene.add_label("/truth/vertebra_label", f"TRUE {a['level']} (CT)",
                                        position=a["vertebra_vertices_mm"].mean(0) * 1e-3 + np.array([0.0, 0.0, 0.05]))
            self._truth_guide = self.server.scene.add_frame("/truth/guide_tip", axes_length=0.03, axes_radius=0.0015)
            self.server.scene.add_label("/truth/guide_tip/label", "TRUE guide tip", position=(0.0, 0.0, -0.02))
            self._truth_drawn = True
        self._truth_guide.wxyz, self._truth_guide.position = _pose(a["T_ref_guide_tip_mm"])
        self.truth_shown = a

    def attach_operator(self, operator: object) -> Any:
        """The human steps of a person's operator (one with a ``prompt`` hook: the lab's terminal operator) asked in
        the view too; None for an operator that is not a person (the simulated one)."""
        if not hasattr(operator, "prompt"):
            return None
        from twinsim.view.operator_prompt import OperatorPrompt

        prompt = OperatorPrompt(self.server)
        operator.prompt = prompt
        self.on_close.append(prompt.close)
        return prompt

    def close(self) -> None:
        self._closed = True
        for closer in self.on_close:
            closer()
        self.server.stop()

    # ---- drawing -------------------------------------------------------------------------
    def show(self, sample: int) -> None:
        """Draw the timeline as it stood at ``sample``."""
        tl = self.timeline
        if tl is None:
            return
        with self._lock:
            sample = int(np.clip(sample, -1, len(tl) - 1))
            self.sample = sample
            for name in ("robot_base", "robot_models", "carm_shape", "camera", "vertebra", "paths", "envelope", "table",
                         "navigation", "xrays"):
                arrays = tl.layer_at(name, max(sample, 0))
                if arrays is not None and self._drawn.get(name) != id(arrays):
                    self._drawn[name] = id(arrays)
                    getattr(self, f"_draw_{name}")(arrays)
            if self.camera is None and tl.layer_at("robot_base", max(sample, 0)) is not None:
                self.set_camera(default_camera(tl, max(sample, 0)))
            if sample >= 0:
                self._draw_sample(tl, sample)
                self._draw_guidance(tl, sample)
            self._draw_steps(tl.steps_at(sample if sample >= 0 else 0) if tl.events else [])
            if self.slider is not None and sample >= 0:
                self._time_md.content = f"t = {tl.t_s[sample]:.2f} s of tracker time, sample {sample + 1} of {len(tl)}"
            stamp = time.strftime("%H:%M:%S", time.gmtime(self._known_at)) + f".{int(self._known_at * 1000) % 1000:03d}"
            self._asof_md.content = f"twin as of {stamp} UTC, sample {sample + 1}"
        self._draw_truth()
        for hook in list(self.on_show):
            hook(tl, sample)

    def set_camera(self, cam: CameraPose) -> None:
        self.camera = cam
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = tuple(cam.position_m), tuple(cam.look_at_m), tuple(cam.up), cam.fov_rad
        self.server.scene.set_up_direction(tuple(cam.up))
        for client in self.server.get_clients().values():
            client.camera.position, client.camera.look_at = tuple(cam.position_m), tuple(cam.look_at_m)

    def _draw_robot_base(self, a: dict[str, np.ndarray]) -> None:
        self._bases["operation"].wxyz, self._bases["operation"].position = _pose(a["T_ref_base_mm"])

    def _draw_robot_models(self, a: dict[str, np.ndarray]) -> None:
        from viser.extras import ViserUrdf

        from twinsim.robot import panda
        from twinsim.robot.tools import NeedleGuideConfig, TrackerCameraConfig

        guide = NeedleGuideConfig(*[float(v) for v in a["needle_guide"]])
        cam = TrackerCameraConfig(str(a["camera_model"]), np.asarray(a["camera_size_m"], dtype=np.float64),
                                  float(a["camera_mount"][0]), float(a["camera_mount"][1]))
        for name, tool in (("operation", guide), ("navigation", cam)):
            if name in self._urdf:
                self._urdf[name].remove()
            # The collision meshes: what the twin checks every motion against, and a tenth of the visual ones' size.
            self._urdf[name] = ViserUrdf(self.server, panda.panda_urdf(tool), root_node_name=f"/robots/{name}",
                                         load_meshes=False, load_collision_meshes=True,
                                         collision_mesh_color_override=ROBOT_RGB[name])

    def _draw_navigation(self, a: dict[str, np.ndarray]) -> None:
        nav = self._bases["navigation"]
        nav.wxyz, nav.position = _pose(a["T_ref_base_mm"])
        nav.visible = True
        if "navigation" in self._urdf:
            self._urdf["navigation"].update_cfg(np.asarray(a["q_rad"], dtype=np.float64))

    def _draw_carm_shape(self, a: dict[str, np.ndarray]) -> None:
        # Wireframe: the C-arm stands around the patient, and a solid one would hide what it surrounds.
        for state, rgb in (("seen", (90, 90, 110)), ("missing", MISSING_RGB)):
            for i, (size, T) in enumerate(zip(a["sizes_mm"], a["T_marker_box_mm"], strict=True)):
                wxyz, p = _pose(T)
                self.server.scene.add_box(f"/carm/body/{state}/box{i}", color=rgb, dimensions=tuple(size * 1e-3), wxyz=wxyz,
                                          position=p, wireframe=True)
        self._carm_nodes = (self.server.scene.add_frame("/carm/body", show_axes=False),
                            self.server.scene.add_frame("/carm/body/seen", show_axes=False),
                            self.server.scene.add_frame("/carm/body/missing", show_axes=False, visible=False))
        self._placed.pop("C-arm body", None)

    def _draw_camera(self, a: dict[str, np.ndarray]) -> None:
        from twinsim.tracking.volume import MeasurementVolume

        v = MeasurementVolume()
        corners = []
        for z in (v.near_mm, v.far_mm):
            x, y = z * np.tan(np.deg2rad(v.half_angle_x_deg)), z * np.tan(np.deg2rad(v.half_angle_y_deg))
            corners.append(np.array([[-x, -y, z], [x, -y, z], [x, y, z], [-x, y, z]]))
        near, far = corners
        segs = [(near[i], near[(i + 1) % 4]) for i in range(4)] + [(far[i], far[(i + 1) % 4]) for i in range(4)]
        segs += [(np.zeros(3), far[i]) for i in range(4)]
        pts = frames.transform_points(a["T_ref_cam_mm"], np.array(segs).reshape(-1, 3)).reshape(-1, 2, 3) * 1e-3
        self.server.scene.add_line_segments("/volume/edges", pts, (60, 160, 220), thickness=0.004)

    def _draw_vertebra(self, a: dict[str, np.ndarray]) -> None:
        self.server.scene.add_mesh_simple("/vertebra/mesh", a["vertices_mm"].astype(np.float64) * 1e-3, a["faces"],
                                          color=BONE_RGB, side="double")

    def _draw_paths(self, a: dict[str, np.ndarray]) -> None:
        for side, start, target, safe in zip(a["sides"], a["start_mm"], a["target_mm"], a["safe"], strict=True):
            rgb = SIDE_RGB.get(str(side), (200, 200, 0)) if bool(safe) else MISSING_RGB
            self.server.scene.add_line_segments(f"/paths/{side}", np.array([[start, target]]) * 1e-3, rgb, thickness=0.006)
            self.server.scene.add_icosphere(f"/paths/{side}_target", 0.004, rgb, position=target * 1e-3)
            self.server.scene.add_label(f"/paths/{side}_label", f"{side} path{'' if safe else ' (refused)'}",
                                        position=start * 1e-3)

    def _draw_xrays(self, a: dict[str, np.ndarray]) -> None:
        """Both X-rays with the planned paths drawn in (red left, blue right), as the panel's images."""
        from PIL import Image, ImageDraw

        n = len(a["scale"])
        for i in range(n):
            rgb = Image.fromarray(a[f"image_{i}"]).convert("RGB")
            if "paths_uv" in a:
                draw = ImageDraw.Draw(rgb)
                for j, side in enumerate(a["sides"]):
                    (u0, v0), (u1, v1) = a["paths_uv"][i, j]
                    draw.line([(u0, v0), (u1, v1)], fill=SIDE_RGB.get(str(side), (200, 200, 0)), width=2)
            img = np.asarray(rgb)
            if i < len(self._xray_images):
                self._xray_images[i].image = img
            else:
                with self._xray_folder:
                    self._xray_images.append(self.server.gui.add_image(img, label=str(a["names"][i])))
        self._xray_md.content = ", ".join(str(x) for x in a["names"]) + (" with the plan" if "paths_uv" in a else "")

    def _draw_envelope(self, a: dict[str, np.ndarray]) -> None:
        self.server.scene.add_mesh_simple("/envelope/mesh", a["vertices_mm"].astype(np.float64) * 1e-3, a["faces"],
                                          color=SKIN_RGB, opacity=0.45, side="double")

    def _draw_table(self, a: dict[str, np.ndarray]) -> None:
        for i, (size, T) in enumerate(zip(a["sizes_mm"], a["T_ref_box_mm"], strict=True)):
            wxyz, p = _pose(T)
            self.server.scene.add_box(f"/table/box{i}", color=TABLE_RGB if i == 0 else (225, 225, 230),
                                      dimensions=tuple(size * 1e-3), wxyz=wxyz, position=p)

    def _tool(self, name: str) -> tuple[Any, Any, Any]:
        """The tool's frame, and its spheres twice under it: as seen (green) and as missing (grey, labelled so)."""
        if name not in self._tool_nodes:
            from twinsim.tracking.markers import MarkerError, load_marker

            try:
                geom = load_marker(name)
                spheres, radius = geom.spheres_mm * 1e-3, 0.5 * geom.sphere_diameter_mm * 1e-3
            except (MarkerError, AttributeError):
                spheres, radius = np.zeros((1, 3)), 0.006
            root = self.server.scene.add_frame(f"/tools/{name}", show_axes=False)
            nodes = []
            label = name.replace("_", " ")
            for state, rgb, text in (("seen", TOOL_RGB, label), ("missing", MISSING_RGB, f"{label}: missing")):
                frame = self.server.scene.add_frame(f"/tools/{name}/{state}", show_axes=False, visible=state == "seen")
                for i, s in enumerate(spheres):
                    self.server.scene.add_icosphere(f"/tools/{name}/{state}/s{i}", radius, rgb, position=s, subdivisions=2)
                self.server.scene.add_label(f"/tools/{name}/{state}/label", text, position=(0.0, 0.0, 0.04))
                nodes.append(frame)
            self._tool_nodes[name] = (root, nodes[0], nodes[1])
        return self._tool_nodes[name]

    def _place(self, nodes: tuple[Any, Any, Any], T_mm: np.ndarray, key: str) -> bool:
        """Show the seen or the missing version at the tool's pose (where it was last seen, when missing); only what
        changed since the last draw goes to the browser."""
        root, seen, lost = nodes
        ok = bool(np.isfinite(T_mm).all())
        last = self._placed.get(key)
        if ok and (last is None or last[1] is None or not np.array_equal(last[1], T_mm)):
            root.wxyz, root.position = _pose(T_mm)
        if last is None or last[0] != ok:
            seen.visible, lost.visible = ok, not ok
        self._placed[key] = (ok, T_mm.copy() if ok else (last[1] if last is not None else None))
        return ok

    def _draw_sample(self, tl: Timeline, k: int) -> None:
        q = tl.q_rad[k]
        if "operation" in self._urdf and np.isfinite(q).all() and not (self.q_shown_rad is not None
                                                                        and np.array_equal(q, self.q_shown_rad)):
            self._urdf["operation"].update_cfg(q)
            self.q_shown_rad = q.copy()
        self.missing_shown = [name for i, name in enumerate(tl.tools)
                              if not self._place(self._tool(name), tl.T_ref_tools_mm[k][i], name)]
        if self._carm_nodes is not None and "carm" in tl.tools:
            self._place(self._carm_nodes, tl.T_ref_tools_mm[k][tl.tools.index("carm")], "C-arm body")

    def _draw_guidance(self, tl: Timeline, k: int) -> None:
        """The dock pose as a ghost guide in the band's colour, and the distance and angle left in the panel."""
        from twinsim.view.guidance import guidance_at

        g = guidance_at(tl, k)
        self.guidance = g
        if not self._ghosts:
            tube = guide_tube(0.006, 0.06)
            self._ghost_frame = self.server.scene.add_frame("/guidance/ghost", show_axes=False, visible=False)
            for band, rgb in BAND_RGB.items():
                self._ghosts[band] = self.server.scene.add_mesh_simple(f"/guidance/ghost/{band}", tube.vertices, tube.faces,
                                                                       color=rgb, opacity=0.45, visible=False)
        if g.T_target_mm is not None:
            self._ghost_frame.wxyz, self._ghost_frame.position = _pose(g.T_target_mm)
        self._ghost_frame.visible = g.T_target_mm is not None
        for band, mesh in self._ghosts.items():
            mesh.visible = band == g.band
        text = "\n\n".join(g.lines()) or "(no guide being placed)"
        if text != self._guidance_md.content:
            self._guidance_md.content = text

    def _draw_steps(self, steps: list[Event]) -> None:
        if not steps:
            return
        lines = "\n".join(f"{i + 1}. {e.title} **{STATE_MARK.get(e.state, e.state)}**" for i, e in enumerate(steps))
        if lines == self._steps_text:
            return
        self._steps_text = lines
        self._steps_md.content = lines
        last = steps[-1]
        self._step_md.content = f"**{last.title}** ({last.state})" + (f"\n\n{last.summary}" if last.summary else "")
