"""The human steps asked in the view, beside the terminal: whichever the person answers first.

A rig whose operator is a person (:class:`~twinsim.hal.real.terminal_operator.TerminalOperator`) asks each
step in the terminal ("Touch the patient's back ... Press Enter"). With the view attached it also shows the
request in the view's **Operator** panel with a "Done" button; the step goes on at the first of the button or
Enter. The terminal is polled, not blocked on, so an answer in the view leaves no read pending in it.

Landmarks are marked by clicking: both X-rays stand side by side on a board in the scene, the camera turns
to face it, and each click on an image marks the landmark chosen in the panel at that pixel (a dot and its
name show where). The terminal may answer instead with a ``twinsim-landmarks/1`` file.
"""

from __future__ import annotations

import select
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twinsim.hal.errors import HalError

BOARD_M = np.array([0.0, 0.0, 20.0])  # the marking board, far from the room: nothing of the scene before it
IMAGE_WIDTH_M, GAP_M = 0.5, 0.05
BOARD_DISTANCE_M = 0.8  # the camera from the board: both images across the screen at a 50 deg field of view


class BoardImage(NamedTuple):
    node: Any  # its scene node
    centre_m: np.ndarray
    width_m: float
    height_m: float
    size_px: tuple[int, int]  # (H, W)


class OperatorPrompt:
    def __init__(self, server: Any, poll_s: float = 0.1) -> None:
        """``server``: the view's viser server."""
        self.server = server
        self.poll_s = poll_s
        self.images: list[BoardImage] = []  # while marking
        self.marks: list[dict[str, np.ndarray]] = []
        self._names: list[str] = []
        self._dots: dict[str, Any] = {}  # the marks' dots and labels in the scene
        self._mark_folder: Any = None
        self.landmark: Any = None  # the panel's choice of the landmark the next click marks
        self._answered = threading.Event()
        self.asked: list[tuple[str, str]] = []  # (request, where it was answered)
        with server.gui.add_folder("Operator"):
            self.text = server.gui.add_markdown("(nothing asked)")
            self.done_button = server.gui.add_button("Done", visible=False, color="green")
        self.done_button.on_click(lambda _e: self._answered.set())
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self._answered.set()

    def ask(self, message: str, timeout_s: float | None = None) -> str:
        """Show ``message`` in the view (and in the terminal when there is one) until the person answers; returns
        where: ``"view"`` or ``"terminal"``."""
        return self._wait(message, timeout_s)

    # ---- landmarks by clicking ---------------------------------------------------------
    def image_pixel(self, i: int, ray_origin: np.ndarray, ray_direction: np.ndarray) -> np.ndarray | None:
        """The pixel (u, v) of X-ray ``i`` that a click's ray meets on the board (None: off that image)."""
        _, centre, w_m, h_m, (H, W) = self.images[i]
        o, d = np.asarray(ray_origin, dtype=np.float64), np.asarray(ray_direction, dtype=np.float64)
        if abs(d[2]) < 1e-9:
            return None
        p = o + d * (BOARD_M[2] - o[2]) / d[2]
        x, y = p[0] - centre[0], p[1] - centre[1]
        u, v = (x / w_m + 0.5) * W, (y / h_m + 0.5) * H  # viser's images as OpenCV's: rows down +y, columns along +x
        return np.array([u, v]) if 0 <= u <= W and 0 <= v <= H else None

    def board_point(self, i: int, uv: np.ndarray) -> np.ndarray:
        """Where pixel ``uv`` of X-ray ``i`` stands on the board (m): the inverse of :meth:`image_pixel`."""
        _, centre, w_m, h_m, (H, W) = self.images[i]
        return np.array([centre[0] + (uv[0] / W - 0.5) * w_m, centre[1] + (uv[1] / H - 0.5) * h_m, BOARD_M[2]])

    def mark_landmarks(self, acquisitions: Sequence[Any], level: str, names: Sequence[str],
                       timeout_s: float | None = None) -> list[dict[str, np.ndarray]]:
        """The person's clicks on the X-rays in the view (or a landmarks file named in the terminal): per image, each
        named landmark's pixel (u, v). Landmarks left unmarked are left out; the landmarks step judges them."""
        from twinsim.imaging.landmarks_file import load_clicks

        server, n = self.server, len(acquisitions)
        self._names, self.marks, self.images = list(names), [{} for _ in range(n)], []
        cameras = {cid: (c.camera.position, c.camera.look_at, c.camera.up_direction)
                   for cid, c in server.get_clients().items()}
        try:
            for i, a in enumerate(acquisitions):
                img = (np.clip(np.asarray(a.image, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)
                H, W = img.shape[:2]
                h_m = IMAGE_WIDTH_M * H / W
                centre = BOARD_M + np.array([(i - (n - 1) / 2) * (IMAGE_WIDTH_M + GAP_M), 0.0, 0.0])
                node = server.scene.add_image(f"/marking/xray{i}", np.stack([img] * 3, axis=-1), IMAGE_WIDTH_M, h_m,
                                              position=centre, cast_shadow=False, receive_shadow=False)
                node.on_click(lambda e, i=i: self._clicked(i, np.asarray(e.ray_origin), np.asarray(e.ray_direction)))
                self.images.append(BoardImage(node, centre, IMAGE_WIDTH_M, h_m, (H, W)))
            with server.gui.add_folder("Mark the landmarks") as self._mark_folder:
                self.landmark = server.gui.add_dropdown("landmark", tuple(names), initial_value=names[0])
                self._progress = server.gui.add_markdown("")
            self._show_progress()
            self.look_at_board()
            where = self._wait(f"Mark {', '.join(names)} of {level} on both X-rays: pick the landmark, click it on each "
                               "image", timeout_s, terminal_reads_file=True)
            if where.startswith("file:"):
                return load_clicks(Path(where[5:]), n_views=n).views
            return [dict(m) for m in self.marks]
        finally:
            for node, *_ in self.images:
                node.remove()
            for dot in self._dots.values():
                dot.remove()
            self._dots = {}
            if self._mark_folder is not None:
                self._mark_folder.remove()
                self._mark_folder = None
            self.images = []
            for cid, c in server.get_clients().items():
                if cid in cameras:
                    c.camera.position, c.camera.look_at, c.camera.up_direction = cameras[cid]

    def look_at_board(self) -> None:
        """Every browser's camera square to the board, as a camera sees its image in OpenCV's convention: from -z,
        looking along +z, the image's rows (+y) down the screen."""
        for c in self.server.get_clients().values():
            c.camera.up_direction = (0.0, -1.0, 0.0)
            c.camera.position, c.camera.look_at = tuple(BOARD_M - np.array([0.0, 0.0, BOARD_DISTANCE_M])), tuple(BOARD_M)

    def _clicked(self, i: int, origin: np.ndarray, direction: np.ndarray) -> None:
        uv = self.image_pixel(i, origin, direction)
        if uv is None or not self.images:
            return
        name = str(self.landmark.value)
        self.marks[i][name] = uv
        p = self.board_point(i, uv) - np.array([0.0, 0.0, 0.002])  # just before the image, on the camera's side
        for key in (f"{i}/{name}", f"{i}/{name}/label"):
            old = self._dots.pop(key, None)
            if old is not None:
                old.remove()
        self._dots[f"{i}/{name}"] = self.server.scene.add_icosphere(f"/marking/dots/{i}/{name}", 0.004, (240, 60, 40),
                                                                    position=p)
        self._dots[f"{i}/{name}/label"] = self.server.scene.add_label(f"/marking/dots/{i}/{name}_label",
                                                                      name.replace("_", " "), position=p)
        todo = [m for m in self._names if m not in self.marks[i]]
        if todo:
            self.landmark.value = todo[0]
        self._show_progress()

    def _show_progress(self) -> None:
        lines = [f"X-ray {i + 1}: {len(m)} of {len(self._names)} marked" for i, m in enumerate(self.marks)]
        self._progress.content = "\n\n".join(lines) + "\n\nPress Done when both are marked."

    def _wait(self, message: str, timeout_s: float | None, terminal_reads_file: bool = False) -> str:
        """Like :meth:`ask`; with ``terminal_reads_file``, a line typed in the terminal is a file's path
        (returned as ``file:PATH``)."""
        terminal = sys.stdin is not None and sys.stdin.isatty()
        self._answered.clear()
        self.text.content = f"**{message}**\n\nPress Done when ready" + (
            " (or give a twinsim-landmarks/1 file in the terminal)." if terminal and terminal_reads_file else
            " (or Enter in the terminal)." if terminal else ".")
        self.done_button.visible = True
        if terminal:
            print(f"[operator] {message}. Press Done in the view"
                  + (", or give a twinsim-landmarks/1 file here: " if terminal_reads_file else ", or Enter here: "),
                  end="", flush=True)
        t_end = None if timeout_s is None else time.monotonic() + timeout_s
        where = ""
        try:
            while not where:
                if self._answered.wait(self.poll_s):
                    where = "view"
                elif terminal and select.select([sys.stdin], [], [], 0)[0]:
                    line = sys.stdin.readline().strip()
                    where = f"file:{line}" if terminal_reads_file and line else "terminal"
                elif t_end is not None and time.monotonic() > t_end:
                    raise HalError("operator", f"nobody answered within {timeout_s:g} s: {message}")
            if self._closed:
                raise HalError("operator", f"the view closed before anyone answered: {message}")
        finally:
            self.done_button.visible = False
            self.text.content = "(nothing asked)"
        if terminal and where == "view":
            print("(done in the view)", flush=True)
        self.asked.append((message, where))
        return where
