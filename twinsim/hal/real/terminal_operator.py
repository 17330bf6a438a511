"""The people at a real rig, prompted in the terminal: each step waits for Enter, then samples while they hold or move."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.hal.errors import HalError
from twinsim.hal.interfaces import Arm
from twinsim.imaging.acquisition import Acquisition

SAMPLE_PERIOD_S = 0.25  # between poses while someone pivots: the tracker is read at each


class TerminalOperator:
    def __init__(self, sample_period_s: float = SAMPLE_PERIOD_S) -> None:
        self.sample_period_s = sample_period_s
        # Where each step is asked instead of the terminal alone: the web view's prompt (twinsim.view.operator_prompt),
        # which asks in both: its ask(message) and mark_landmarks(acquisitions, level, names).
        self.prompt: Any = None

    def say(self, message: str) -> None:
        print(f"[operator] {message}", flush=True)

    def confirm(self, message: str) -> None:
        if self.prompt is not None:
            self.prompt.ask(message)
            return
        if not sys.stdin or not sys.stdin.isatty():
            raise HalError("operator", f"a person must act at this step, but there is no terminal to ask: {message}")
        input(f"[operator] {message} Press Enter when ready. ")

    def acknowledge(self, message: str) -> None:
        """Asked like any step (in the view too); without a terminal or a view, said only: nothing waits for it."""
        if self.prompt is None and (not sys.stdin or not sys.stdin.isatty()):
            self.say(message)
            return
        self.confirm(f"{message} Acknowledge to go on.")

    def approve_motion(self, what: str) -> None:
        self.confirm(f"Next robot motion: {what}. Keep the workspace clear.")

    def _sweep(self, n: int) -> Iterator[int]:
        for i in range(n):
            yield i
            time.sleep(self.sample_period_s)

    def pivot_pointer(self, n_poses: int) -> Iterator[int]:
        self.confirm(f"Put the pointer tip in the divot and pivot it slowly (about {n_poses * self.sample_period_s:.0f} s), "
                      "keeping its marker towards the camera.")
        yield from self._sweep(n_poses)

    def hand_guide_tip_pivot(self, arm: Arm, n_poses: int, rod_extension_mm: float = 0.0) -> Iterator[int]:
        what = (f"the tip of the calibration rod (in the guide's bore, standing {rod_extension_mm:.0f} mm out of the tip)"
                if rod_extension_mm > 0 else "the needle-guide tip")
        self.confirm(f"Switch {arm.name} to guiding mode, seat {what} in the divot and tilt the robot about "
                     f"it slowly (about {n_poses * self.sample_period_s:.0f} s).")
        yield from self._sweep(n_poses)

    def touch_landmarks(self, names: Sequence[str]) -> Iterator[str]:
        for name in names:
            self.confirm(f"Touch the {name} with the pointer and hold still.")
            yield name

    def touch_surface(self, n_points: int) -> Iterator[int]:
        for i in range(n_points):
            self.confirm(f"Touch exposed bone of the target level, point {i + 1} of {n_points}, and hold still.")
            yield i

    def trace_surface(self, surface: str, n_points: int) -> Iterator[int]:
        where = {"skin": "the patient's back, spread over the region around the target level and out to the flanks"}
        if surface not in where:
            raise HalError("operator", f"unknown surface {surface!r}; known: {sorted(where)}")
        for i in range(n_points):
            self.confirm(f"Touch {where[surface]} with the pointer, point {i + 1} of {n_points}, and hold still.")
            yield i

    def mark_landmarks(self, acquisitions: Sequence[Acquisition], level: str, names: Sequence[str]) -> list[dict[str, np.ndarray]]:
        from twinsim.imaging.landmarks_file import load_clicks

        if self.prompt is not None:  # clicked on the X-rays in the view (or a file given in the terminal)
            return self.prompt.mark_landmarks(acquisitions, level, names)
        if not sys.stdin or not sys.stdin.isatty():
            raise HalError("operator", "landmarks must be marked on the X-rays, but there is no terminal to ask: pass a "
                                       "twinsim-landmarks/1 file (--clicks)")
        path = input(f"[operator] Mark {', '.join(names)} of {level} in each of the {len(acquisitions)} X-rays and give the "
                     "twinsim-landmarks/1 file: ").strip()
        return load_clicks(Path(path), n_views=len(acquisitions)).views
