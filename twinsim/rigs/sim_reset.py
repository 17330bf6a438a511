"""A simulated rig put back as built between episodes or bench cases, every random source reseeded from one seed.

What a case leaves behind (the arm where it stopped, a moved patient, a silent tracker, the tracker's
latency queue) is undone, and the tracker's noise, the arm's repeatability, the simulated people and
the C-arm's detector noise each restart from a stream of ``seed``: a case's outcome then depends on
its own seed only, not on the cases that ran before it in the same room (so a bench gives the same
records serially and on any number of workers).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def reset_sim_room(dev: Any, physical_home: dict[str, float], seed: int) -> None:
    """``dev``: an open simulated rig (:class:`twinsim.rigs.open_rig.RigDevices`); ``physical_home``: the operation
    robot's joints as the room was built. The tracker is not refilled: a caller arms its faults first."""
    dev.tracker.answering = True
    dev.room.move_patient(np.eye(4))
    dev.arm.put_back(physical_home)
    rngs = np.random.SeedSequence(seed).spawn(4)
    vega = dev.tracker.vega
    vega.rng = np.random.default_rng(rngs[0])
    vega._pending.clear()
    dev.arm._rng = np.random.default_rng(rngs[1])
    dev.operator.rng = np.random.default_rng(rngs[2])
    dev.carm.seed = int(np.random.default_rng(rngs[3]).integers(2**31))
    dev.carm._shots = 0
