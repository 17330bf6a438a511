"""Simulated time shared by the simulated devices: the tracker's frames advance it, motions follow it."""

from __future__ import annotations

from collections.abc import Callable


class SimClock:
    def __init__(self) -> None:
        self.now_s = 0.0
        self._listeners: list[Callable[[float], None]] = []

    def subscribe(self, on_tick: Callable[[float], None]) -> None:
        self._listeners.append(on_tick)

    def unsubscribe(self, on_tick: Callable[[float], None]) -> None:
        if on_tick in self._listeners:
            self._listeners.remove(on_tick)

    def advance(self, dt_s: float) -> float:
        """Move time forward by ``dt_s``; every subscriber (e.g. a moving arm) catches up to it."""
        self.now_s += dt_s
        for f in list(self._listeners):
            f(self.now_s)
        return self.now_s
