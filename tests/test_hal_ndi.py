"""scikit-surgerynditracker's NDITracker (the real driver, through ndicapi) against `twinsim serve-vega`."""

import json
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from protocol_check import implements

from twinsim import frames
from twinsim.bench.peers import free_port, vega_peer, wait_until_stopped
from twinsim.hal import ConnectionLost, Tracker
from twinsim.hal.real.ndi_tracker import open_ndi_tracker
from twinsim.tracking import ndi_protocol as ndi
from twinsim.tracking.markers import MARKERS_DIR

TOOLS = ["patient_reference", "operation_flange", "needle_guide", "carm", "pointer"]


def _config(port, tools=TOOLS):
    return {"tracker type": "vega", "ip address": "127.0.0.1", "port": port,
            "romfiles": [str(MARKERS_DIR / f"{t}.rom") for t in tools]}


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_pose(T_driver, T_sim):
    T_sim = np.array(T_sim, dtype=float)
    t_tol = 4 * np.finfo(np.float32).eps * np.abs(T_sim[:3, 3]).max() + 1e-6  # float32 on the wire
    return np.allclose(T_driver[:3, :3], T_sim[:3, :3], atol=1e-6) and np.allclose(T_driver[:3, 3], T_sim[:3, 3], atol=t_tol)


@pytest.mark.timeout(180)
def test_room_poses_through_the_real_driver_equal_the_simulated_trackers(tmp_path, room):
    # `room` builds the example patient into this session's cache, which the peer process reuses.
    log = tmp_path / "frames.jsonl"
    with vega_peer(log=log, bx=True) as peer:  # BX: float32 on the wire, so the poses compare exactly
        tracker = open_ndi_tracker(_config(peer.port), tool_names=TOOLS)
        assert implements(tracker, Tracker) == []
        handles, names = tracker.get_tool_descriptions()
        assert names == TOOLS
        tracker.start_tracking()
        got = [tracker.get_frame() for _ in range(20)]
        tracker.stop_tracking()
        tracker.close()
    served = _log(log)
    assert len(served) == 20  # one simulated frame per BX command
    compared = 0
    for f, s in zip(got, served, strict=True):
        sim = {h: np.array([[np.nan if v is None else v for v in row] for row in P]) for h, P in zip(s["handles"], s["poses"], strict=True)}
        for T in f[3]:
            T = np.asarray(T)
            if np.isnan(T[:3]).any():
                assert any(np.isnan(P[:3]).all() for P in sim.values())  # hidden in the simulation too
                continue
            # The driver's pose is one the simulated tracker measured in that same frame, to float32 precision.
            assert any(np.isfinite(P).all() and _same_pose(T, P) for P in sim.values())
            compared += 1
    assert compared >= 20 * 3  # most tools are in the tracker's view in the default room


@pytest.mark.timeout(180)
def test_the_stock_driver_reads_serve_vega_with_its_default_settings(tmp_path, room):
    # No twinsim code on the client side: scikit-surgerynditracker's NDITracker as anyone would use it.
    from sksurgerynditracker.nditracker import NDITracker

    log = tmp_path / "frames.jsonl"
    with vega_peer(log=log) as peer:
        tracker = NDITracker(_config(peer.port))
        tracker.start_tracking()
        got = [tracker.get_frame() for _ in range(50)]
        tracker.stop_tracking()
        tracker.close()
    served = _log(log)
    assert len(served) == 50
    compared = 0
    for f, s in zip(got, served, strict=True):
        sim = {int(h): np.array([[np.nan if v is None else v for v in row] for row in P])
               for h, P in zip(s["handles"], s["poses"], strict=True)}
        for handle, T in zip(f[0], f[3], strict=True):
            T, P = np.asarray(T), sim[int(handle)]
            if not np.isfinite(P).all():
                assert np.isnan(T[:3]).all()  # hidden in the simulation: NaN from the driver, never a stale pose
                continue
            # TX: positions in 0.01 mm steps, quaternions in 1e-4 steps.
            assert np.allclose(T[:3, 3], P[:3, 3], atol=0.006) and np.allclose(T[:3, :3], P[:3, :3], atol=4e-4)
            compared += 1
    assert compared >= 50 * 3


def _serve(port, hide, firmware, ready):
    """A peer process over two tools, ``needle_guide`` hidden when ``hide`` (far outside the volume)."""
    from twinsim.hal.sim.vega_peer import VegaPeer
    from twinsim.tracking.markers import load_marker
    from twinsim.tracking.vega_sim import SimulatedTool, SimulatedVega

    far = [9.0, 0.0, 1.5] if hide else [0.15, 0.05, 1.6]
    tools = [SimulatedTool(1, load_marker("pointer"), lambda: frames.make_transform(t=[0.1, 0.0, 1.5])),
             SimulatedTool(2, load_marker("needle_guide"), lambda: frames.make_transform(t=far))]
    vega = SimulatedVega({"seed": 3}, tools, lambda: np.eye(4))
    vega.start_tracking()
    peer = VegaPeer(vega, port=port, firmware=firmware)
    ready.set()
    peer.serve_forever()


@pytest.fixture
def small_peer():
    ctx = multiprocessing.get_context("fork")
    procs = []

    def start(hide=True, firmware=None):
        from twinsim.hal.sim.vega_peer import FIRMWARE_BX

        port, ready = free_port(), ctx.Event()
        p = ctx.Process(target=_serve, args=(port, hide, firmware or FIRMWARE_BX, ready), daemon=True)
        p.start()
        assert ready.wait(30)
        procs.append(p)
        return p, port

    yield start
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)


@pytest.mark.timeout(60)
def test_hidden_tool_is_nan_not_a_stale_pose(small_peer):
    _, port = small_peer(hide=True)
    tracker = open_ndi_tracker(_config(port, ["pointer", "needle_guide"]), tool_names=["pointer", "needle_guide"])
    tracker.start_tracking()
    f = [tracker.get_frame() for _ in range(3)][-1]  # past the tracker's latency
    assert np.isfinite(np.asarray(f[3][0])).all()
    assert np.isnan(np.asarray(f[3][1])[:3]).all() and np.isnan(f[4][1])
    tracker.close()


@pytest.mark.timeout(60)
def test_tx_frames_carry_ndi_text_precision(small_peer):
    from twinsim.hal.sim.vega_peer import FIRMWARE_TX

    _, port = small_peer(hide=False, firmware=FIRMWARE_TX)
    tracker = open_ndi_tracker(_config(port, ["pointer", "needle_guide"]), tool_names=["pointer", "needle_guide"])
    tracker.start_tracking()
    T = np.asarray([tracker.get_frame() for _ in range(3)][-1][3][0])
    # TX: position in 0.01 mm steps, quaternion in 1e-4 steps.
    assert np.allclose(T[:3, 3] * 100, np.round(T[:3, 3] * 100), atol=1e-3)
    assert np.allclose(T[:3, 3], [100.0, 0.0, 1500.0], atol=1.0)
    tracker.close()


def _tracking(port, timeout_s=1.0):
    tracker = open_ndi_tracker(_config(port, ["pointer", "needle_guide"]), timeout_s=timeout_s, tool_names=["pointer", "needle_guide"])
    tracker.start_tracking()
    tracker.get_frame()
    return tracker


@pytest.mark.timeout(60)
def test_peer_that_dies_gives_connection_lost(small_peer):
    p, port = small_peer(hide=False)
    tracker = _tracking(port)
    os.kill(p.pid, signal.SIGKILL)
    p.join(5)
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="tracker: error when reading a frame"):
        tracker.get_frame()
    assert time.monotonic() - t0 < 2.0


@pytest.mark.timeout(60)
def test_peer_that_goes_silent_gives_connection_lost_within_the_timeout(small_peer):
    p, port = small_peer(hide=False)
    tracker = _tracking(port)
    os.kill(p.pid, signal.SIGSTOP)  # alive, connected, answering nothing
    wait_until_stopped(p.pid)
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match="within 1 s"):
            tracker.get_frame()
        assert time.monotonic() - t0 < 3.0
    finally:
        os.kill(p.pid, signal.SIGCONT)


@pytest.mark.timeout(30)
def test_no_tracker_and_missing_tool_file_are_clear_errors(tmp_path):
    with pytest.raises(ConnectionLost, match="no NDI tracker answers at 127.0.0.1"):
        open_ndi_tracker(_config(free_port()))
    with pytest.raises(ConnectionLost, match="tool definition file not found"):
        open_ndi_tracker({**_config(free_port()), "romfiles": [str(tmp_path / "nope.rom")]})


def test_protocol_framing_and_tool_definitions():
    assert ndi.encode_command("INIT:") == b"INIT:E3A5\r"  # NDI's documented example
    assert ndi.text_reply("OKAY") == b"OKAYA896\r"
    assert ndi.decode_command(b"PHSR:01E03E") == ("PHSR", "01")
    with pytest.raises(ndi.NdiProtocolError, match="bad CRC"):
        ndi.decode_command(b"PHSR:01E03F")
    reply = ndi.bx_reply([1, 2], [7, 7], [np.array([1.0, 0, 0, 0, 1.5, -2.0, 1000.0]), None], [0.1, 0.0])
    assert reply[:2] == b"\xc4\xa5" and int.from_bytes(reply[2:4], "little") == len(reply) - 8
    assert ndi.crc16(reply[:4]) == int.from_bytes(reply[4:6], "little")
    assert ndi.crc16(reply[6:-2]) == int.from_bytes(reply[-2:], "little")
    for rom in MARKERS_DIR.glob("*.rom"):
        name, spheres = ndi.decode_tool_definition(rom.read_bytes().ljust(ndi.ROM_SIZE, b"\0"))
        assert name == rom.stem and spheres.shape == (4, 3)
    with pytest.raises(ndi.NdiProtocolError, match="not a twinsim tool definition"):
        ndi.decode_tool_definition(b"\x01\x02" * 100)
