"""Real-protocol peers on loopback, for tests and benches: franky-sim (libfranka) and serve-vega (NDI).

Each runs in its own process, as the real devices are other machines: ndicapi holds Python's
GIL in some blocking calls, so an in-process peer could deadlock with its client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wait_until_stopped(pid: int, timeout_s: float = 10.0) -> None:
    """Return once every thread of ``pid`` is stopped, after a SIGSTOP sent to it.

    kill() only queues a stop: one thread is woken to begin the group stop, and on a loaded
    machine another thread (a peer's client thread, woken by the next command) can still answer
    before it happens.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
            except OSError:
                continue
            states.append(stat.rsplit(")", 1)[1].split()[0])
        if states and all(s in "Tt" for s in states):
            return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not stop within {timeout_s:g} s")


class Peer:
    def __init__(self, argv: list[str], ready_text: str, what: str, timeout_s: float = 120.0) -> None:
        self.what = what
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if ready_text in line:
                return
        self.kill()
        raise RuntimeError(f"{what} did not start within {timeout_s:g} s:\n" + "".join(seen[-20:]))

    def pause(self) -> None:
        """The peer stops answering but keeps its connections (a hung device)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        wait_until_stopped(self.proc.pid)

    def kill(self) -> None:
        """The peer dies at once (a pulled cable, a crashed server)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_address(offset: int = 0) -> str:
    """A loopback address of its own per robot (franky-sim binds libfranka's fixed ports)."""
    return f"127.0.{(os.getpid() // 250) % 250 + 1}.{(os.getpid() + offset) % 250 + 2}"


def franky_sim(host: str | None = None) -> Peer:
    exe = shutil.which("franky-sim", path=str(BIN)) or shutil.which("franky-sim")
    if exe is None:
        raise RuntimeError("franky-sim is not installed (pip install franky-sim; it is in twinsim's test extra)")
    host = host or loopback_address()
    # Its default backend does not load here; MuJoCo does. It simulates an FR3.
    peer = Peer([exe, "-s", "mujoco", "--hostname", host], "Connect to the server", f"franky-sim on {host}")
    peer.host = host  # type: ignore[attr-defined]
    return peer


def vega_peer(port: int | None = None, rig: str | None = None, log: str | Path | None = None, bx: bool = False,
              seed: int | None = None) -> Peer:
    port = port or free_port()
    argv = [sys.executable, "-m", "twinsim.cli", "serve-vega", "--port", str(port)]
    argv += ["--rig", str(rig)] if rig else []
    argv += ["--log", str(log)] if log else []
    argv += ["--bx"] if bx else []
    argv += ["--seed", str(seed)] if seed is not None else []
    peer = Peer(argv, "serving the simulated Vega", f"twinsim serve-vega on port {port}")
    peer.port = port  # type: ignore[attr-defined]
    return peer
