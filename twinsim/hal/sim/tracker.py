"""The simulated Vega behind the HAL ``Tracker``: each frame is 1/60 s of simulated time."""

from __future__ import annotations

from twinsim.hal.errors import ConnectionLost
from twinsim.hal.sim.clock import SimClock
from twinsim.tracking.vega_sim import FRAME_RATE_HZ, SimulatedVega


class SimTracker:
    def __init__(self, vega: SimulatedVega, clock: SimClock) -> None:
        self.vega, self.clock = vega, clock
        self.answering = True  # False: it stops answering, as a tracker whose cable or power went

    def _check_answering(self) -> None:
        if not self.answering:
            raise ConnectionLost("tracker", "error when reading a frame: no valid reply within 2 s (cable, network or "
                                            "power: check the tracker, then reconnect)")

    def start_tracking(self) -> None:
        self.vega.start_tracking()

    def stop_tracking(self) -> None:
        self.vega.stop_tracking()

    def get_frame(self) -> tuple[list, list, list, list, list]:
        self.clock.advance(1.0 / FRAME_RATE_HZ)  # devices moving meanwhile catch up before the measurement
        self._check_answering()
        return self.vega.get_frame()

    def refill(self) -> None:
        """Simulation only: read frames until what the tracker reports was measured after now (its latency), e.g.
        after the room was put back between cases or episodes."""
        for _ in range(self.vega.latency_frames + 1):
            self.get_frame()

    def get_tool_descriptions(self) -> tuple[list, list]:
        self._check_answering()
        return self.vega.get_tool_descriptions()

    def close(self) -> None:
        self.vega.close()
