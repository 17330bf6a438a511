"""``twinsim bench hal``: what the hardware abstraction layer costs, and the real-protocol round trips.

Same run, medians over repeats, ratios against the direct call (this machine is shared and
noisy; absolute times are for orientation only):

- tracker frame: ``SimTracker.get_frame`` (HAL, advances the clock) against the simulated
  Vega's own ``get_frame``;
- joint command: issuing ``SimArm.move_joints(asynchronous=True)`` (limit checks, trajectory
  set-up) against setting the joints in the room directly; and one simulated second of
  motion with contact checks, per wall second;
- franky-sim: ``FrankyArm.read_joints_rad`` against franky's own ``current_joint_state``
  (the HAL's share), and a 0.1 rad joint move's wall time;
- NDI peer: one ``get_frame`` through scikit-surgerynditracker, ndicapi and
  ``twinsim serve-vega`` (loopback TCP, BX), against the in-process simulated frame.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.report import table, write_json
from twinsim.tracking.tools import TRACKED_TOOLS


def _median_us(f: Callable[[], Any], n: int, repeats: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs), runs


def _paired(name: str, hal: Callable[[], Any], direct: Callable[[], Any], n: int, repeats: int) -> dict:
    # Interleaved so that load on the shared machine hits both alike.
    h, d = [], []
    for _ in range(repeats):
        h.append(_median_us(hal, n, 1)[0])
        d.append(_median_us(direct, n, 1)[0])
    mh, md = statistics.median(h), statistics.median(d)
    return {"what": name, "hal_us": mh, "direct_us": md, "overhead_us": mh - md, "ratio": mh / md, "repeats": repeats,
            "calls_per_repeat": n}


def main(out: Path, repeats: int = 7) -> int:
    from twinsim.bench.peers import franky_sim, loopback_address, vega_peer
    from twinsim.hal.real.franky_arm import FrankyArm
    from twinsim.hal.real.ndi_tracker import open_ndi_tracker
    from twinsim.hal.sim.arm import SimArm
    from twinsim.hal.sim.clock import SimClock
    from twinsim.hal.sim.tracker import SimTracker
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room
    from twinsim.tracking.markers import MARKERS_DIR

    rows: list[dict] = []
    room = build_operating_room(None, progress=None)
    with room:
        clock = SimClock()
        arm = SimArm(room, clock)
        vega = room_tracker(room, {"seed": 0})
        tracker = SimTracker(vega, clock)
        rows.append(_paired("tracker frame (sim)", tracker.get_frame, vega.get_frame, 30, repeats))
        home = arm.read_joints_rad()
        q_phys = room.joint_positions("operation")
        goal = home + np.array([0.05, 0, 0, 0, 0, 0, 0])

        def command() -> None:
            arm.move_joints(goal, asynchronous=True)
            arm.stop()
            arm._pending = None  # the benchmark discards the stop it caused

        rows.append(_paired("joint command issued (sim)", command, lambda: room.set_joint_positions("operation", q_phys),
                            30, repeats))
        motion = []
        for _ in range(repeats):
            arm.move_joints(home, speed_factor=0.5)
            t0, s0 = time.perf_counter(), clock.now_s
            arm.move_joints(home + np.array([0.3, 0, 0, 0, 0, 0, 0]), speed_factor=0.5)
            motion.append((clock.now_s - s0) / (time.perf_counter() - t0))
        arm.move_joints(home, speed_factor=0.5)
        arm.close()
        motion_rate = statistics.median(motion)

    with franky_sim(loopback_address(7)) as peer:
        fa = FrankyArm(peer.host, "operation", realtime=False)
        rows.append(_paired("joint reading (franky-sim)", fa.read_joints_rad,
                            lambda: np.array(fa.robot.current_joint_state.position), 50, repeats))
        q0 = fa.read_joints_rad()
        moves = []
        for k in range(repeats):
            t0 = time.perf_counter()
            fa.move_joints(q0 + (0.1 if k % 2 == 0 else 0.0) * np.eye(7)[0], speed_factor=0.5)
            moves.append(time.perf_counter() - t0)
        franky_move_s = statistics.median(moves)

    tools = list(TRACKED_TOOLS)
    with vega_peer(bx=True) as peer:
        nt = open_ndi_tracker({"tracker type": "vega", "ip address": "127.0.0.1", "port": peer.port,
                               "romfiles": [str(MARKERS_DIR / f"{t}.rom") for t in tools]}, tool_names=tools)
        nt.start_tracking()
        ndi_us, _ = _median_us(nt.get_frame, 30, repeats)
        nt.close()
    sim_frame_us = rows[0]["direct_us"]

    result = {
        "benchmark": "hal", "machine": platform.platform(), "python": platform.python_version(),
        "note": "medians over repeats, HAL and direct calls interleaved in the same run; absolute times are this shared "
                "CPU machine's, compare the ratios",
        "paired": rows,
        "sim_motion_rate_sim_s_per_wall_s": motion_rate,
        "franky_sim_move_0p1rad_s": franky_move_s,
        "ndi_peer_frame_us": ndi_us, "ndi_peer_frame_vs_in_process_ratio": ndi_us / sim_frame_us,
    }
    write_json(out, result)
    print(table(["call", "through the HAL (us)", "direct (us)", "overhead (us)", "ratio"],
                [[r["what"], f"{r['hal_us']:.1f}", f"{r['direct_us']:.1f}", f"{r['overhead_us']:+.1f}", f"{r['ratio']:.2f}"]
                 for r in rows]))
    print(table(["round trip", "median"], [
        ["simulated motion with contact checks", f"{motion_rate:.1f} simulated s per wall s"],
        ["franky-sim: 0.1 rad joint move at speed factor 0.5", f"{franky_move_s * 1000:.0f} ms"],
        ["NDI peer: one BX frame, 5 tools (sksurgerynditracker -> serve-vega)",
         f"{ndi_us / 1000:.2f} ms ({ndi_us / sim_frame_us:.1f}x the in-process simulated frame)"],
    ]))
    print(f"wrote {out}")
    return 0
