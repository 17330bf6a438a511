"""The view's virtual needle guide: a transform gizmo, the twin's verdict on its pose, and Move with confirmation.

Dragging the gizmo (or picking a preset pose) proposes its pose to a
:class:`~twinsim.view.manipulation.GuideManipulator`, which checks it in the twin at once: the virtual guide
turns green or red and the panel says why. "Move" is enabled only for a pose that passed and is still where
the gizmo stands; it asks for a confirmation, and only "Confirm the move" sends the motion, through the HAL
behind the manipulator's guarded arm, then the closed loop. Checks run on one worker thread, the newest pose
first: a drag produces many poses, and only the one the person lets go at matters.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.view.manipulation import GuideManipulator, ManipulationError, MoveOutcome, Verdict
from twinsim.view.web_view import guide_tube

VERDICT_RGB = {"unchecked": (170, 170, 190), "checking": (170, 170, 190), "passed": (40, 190, 70), "refused": (220, 50, 40)}
GIZMO_NODE = "/manipulate/gizmo"


class ManipulationPanel:
    def __init__(self, server: Any, manipulator: GuideManipulator, presets: dict[str, np.ndarray] | None = None) -> None:
        """``server``: the view's viser server; ``presets``: named guide poses (``ref``, mm) the gizmo can jump to."""
        self.server, self.m = server, manipulator
        self.presets = {"where the guide is": manipulator.tool_pose_mm(), **(presets or {})}
        self.verdict: Verdict | None = None
        self.outcome: MoveOutcome | None = None
        self.state = "unchecked"
        self._pending: np.ndarray | None = None
        self._wake = threading.Condition()
        self._closed = False
        self.busy = False  # a check or a move under way
        wxyz, pos = frames.to_wxyz_position_m(self.presets["where the guide is"])
        self.gizmo = server.scene.add_transform_controls(GIZMO_NODE, scale=0.12, depth_test=False, wxyz=wxyz, position=pos)
        tube = guide_tube(0.007, 0.08)
        self._tubes = {s: server.scene.add_mesh_simple(f"{GIZMO_NODE}/guide_{s}", tube.vertices, tube.faces, color=rgb,
                                                       opacity=0.6, visible=s == "unchecked")
                       for s, rgb in VERDICT_RGB.items()}
        with server.gui.add_folder("Move the guide"):
            self.preset = server.gui.add_dropdown("virtual guide at", tuple(self.presets), initial_value="where the guide is")
            self.text = server.gui.add_markdown("Drag the virtual guide to a pose: the twin checks it at once.")
            self.move_button = server.gui.add_button("Move", disabled=True)
            self.confirm_button = server.gui.add_button("Confirm the move", visible=False, color="red")
            self.cancel_button = server.gui.add_button("Cancel", visible=False)
        self.gizmo.on_update(lambda _e: self.propose(self.gizmo_pose_mm()))
        self.preset.on_update(lambda _e: self.jump(self.presets[self.preset.value]))
        self.move_button.on_click(lambda _e: self._ask())
        self.confirm_button.on_click(lambda _e: threading.Thread(target=self._move, name="view-move", daemon=True).start())
        self.cancel_button.on_click(lambda _e: self._asking(False))
        threading.Thread(target=self._checker, name="view-check", daemon=True).start()

    def gizmo_pose_mm(self) -> np.ndarray:
        return frames.from_wxyz_position_m(self.gizmo.wxyz, self.gizmo.position)

    def jump(self, T_ref_tool_mm: np.ndarray) -> None:
        """Put the gizmo at a pose (a preset) and check it."""
        self.gizmo.wxyz, self.gizmo.position = frames.to_wxyz_position_m(T_ref_tool_mm)
        self.propose(self.gizmo_pose_mm())

    def propose(self, T_ref_tool_mm: np.ndarray) -> None:
        with self._wake:
            self._pending = np.asarray(T_ref_tool_mm, dtype=np.float64)
            self._show("checking", "Checking the pose in the twin...")
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _checker(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed or self._pending is None:
                    return
                T, self._pending = self._pending, None
                self.busy = True
            try:
                v = self.m.check(T)
            except Exception as exc:  # noqa: BLE001 (a bad pose or a fault in the check is said in the panel)
                self.busy = False
                self._show("refused", f"**Cannot check this pose:** {type(exc).__name__}: {exc}")
                continue
            with self._wake:
                self.busy = self._pending is not None
                if self._pending is not None:  # the gizmo moved on meanwhile: that pose is checked next
                    continue
                self.verdict = v
            self._show("passed" if v.ok else "refused", (f"**The twin passes this pose** ({v.check_s:.1f} s): {v.reason}."
                                                         if v.ok else f"**Refused:** {v.reason}."))

    def _show(self, state: str, text: str) -> None:
        self.state = state
        for s, tube in self._tubes.items():
            tube.visible = s == state
        self.text.content = text
        self.move_button.disabled = state != "passed"
        if state != "passed":
            self._asking(False)

    def _current(self) -> Verdict | None:
        """The passed verdict for the pose the gizmo stands at now (None when there is none)."""
        v = self.verdict
        if v is None or not v.ok or self.busy or self.state != "passed":
            return None
        T = self.gizmo_pose_mm()
        return v if np.allclose(T, v.T_ref_tool_mm, atol=1e-6) else None

    def _ask(self) -> None:
        v = self._current()
        if v is None:
            self.text.content = "Check a pose first: only a pose the twin passed can be moved to."
            return
        self.text.content = (f"**Move the operation robot?** {v.reason}. The arm is stopped if the tracker loses the "
                             "guide or the reference, or the reference moves.")
        self._asking(True)

    def _asking(self, on: bool) -> None:
        self.confirm_button.visible = self.cancel_button.visible = on
        self.move_button.visible = not on

    def _move(self) -> None:
        v = self._current()
        self._asking(False)
        if v is None:
            self.text.content = "The pose changed since the check: nothing sent."
            return
        self.busy = True
        self.move_button.disabled = True
        self.text.content = "Moving (the arm stops if the tracker loses the guide or the reference)..."
        try:
            self.outcome = out = self.m.move(v, confirmed=True)
        except ManipulationError as exc:
            self.text.content = f"**Not moved:** {exc}"
            return
        finally:
            self.busy = False
        self.state = "moved" if out.ok else "stopped"
        self.text.content = f"**{'Moved' if out.ok else 'Stopped'}:** {out.message}."
