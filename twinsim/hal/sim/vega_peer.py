"""A simulated Polaris Vega on the network: serves a tracker's frames over NDI's combined API.

``twinsim serve-vega`` runs it on the loopback interface, so scikit-surgerynditracker (or any
NDI client a lab already has) can be pointed at the simulated room, and CI exercises the real
driver's code path. It answers what ndicapi sends at connect (INIT, PHSR, PHRQ, PVWR, PINIT,
PENA, VER), then TSTART, BX or TX per frame, and TSTOP; anything else gets NDI's "invalid
command" error. Every frame it serves is taken from the backing tracker's ``get_frame()``.

Faults for tests and rehearsals: :meth:`VegaPeer.go_silent` stops answering (a hung device),
:meth:`VegaPeer.kill` drops every connection (a pulled cable).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.tracking import ndi_protocol as ndi

# What a Polaris Vega with firmware 008 reports (its "Freeze Tag"): scikit-surgerynditracker polls it with TX, text
# frames its stock ndicapy reads with any number of tools. The default.
FIRMWARE_TX = "Polaris Vega 008"
# Any other freeze tag makes the driver poll with BX, binary frames at float32 precision; ndicapy (3.7.6) fails to
# decode a BX reply for 3 or more tools as text (twinsim's own driver wrapper tolerates it). An option: --bx.
FIRMWARE_BX = "twinsim simulated Vega 001"


@dataclass
class _Session:
    tools_by_handle: dict[int, bytearray] = field(default_factory=dict)  # uploaded tool definitions
    initialised: dict[int, str] = field(default_factory=dict)  # handle -> tool name
    enabled: set[int] = field(default_factory=set)
    tracking: bool = False


class VegaPeer:
    """Serves ``tracker`` (an object with sksurgery's ``get_frame`` and ``get_tool_descriptions``)."""

    def __init__(self, tracker: Any, host: str = "127.0.0.1", port: int = 8765, firmware: str = FIRMWARE_TX) -> None:
        self.tracker, self.firmware = tracker, firmware
        _, names = tracker.get_tool_descriptions()
        self.index = {str(n): i for i, n in enumerate(names)}
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.address = self.listener.getsockname()[:2]
        self.last_frame: tuple | None = None  # the backing tracker's frame behind the last BX/TX reply
        self.frames_served = 0
        self._silent = threading.Event()
        self._stopped = threading.Event()
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- life cycle ----------------------------------------------------------------
    def start(self) -> VegaPeer:
        self._thread = threading.Thread(target=self.serve_forever, name="vega-peer", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="vega-peer-client", daemon=True).start()

    def go_silent(self) -> None:
        """Keep the connections open but answer nothing more."""
        self._silent.set()

    def kill(self) -> None:
        """Drop every connection and stop listening."""
        self._stopped.set()
        for s in [self.listener, *self._connections]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    close = kill

    def __enter__(self) -> VegaPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # ---- one client ----------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        session, buffer = _Session(), b""
        while not self._stopped.is_set():
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\r" in buffer:
                raw, buffer = buffer.split(b"\r", 1)
                reply = self._answer(session, raw)
                if self._silent.is_set():
                    continue
                try:
                    conn.sendall(reply)
                except OSError:
                    return

    def _answer(self, s: _Session, raw: bytes) -> bytes:
        try:
            name, params = ndi.decode_command(raw)
        except ndi.NdiProtocolError:
            return ndi.error_reply(ndi.ERR_BAD_CRC)
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        if handler is None:
            return ndi.error_reply(ndi.ERR_INVALID_COMMAND)
        return handler(s, params)

    def _cmd_init(self, s: _Session, params: str) -> bytes:
        s.tracking = False
        return ndi.text_reply("OKAY")

    def _cmd_ver(self, s: _Session, params: str) -> bytes:
        return ndi.text_reply(f"twinsim simulated Polaris Vega\nFreeze Tag: {self.firmware}\nCharacterization Date: 2026-01-01")

    def _cmd_phsr(self, s: _Session, params: str) -> bytes:
        mode = params[:2] or "00"
        if mode == "01":  # to be freed: none (a new session starts clean)
            handles: list[int] = []
        elif mode == "02":  # occupied, not initialised
            handles = [h for h in s.tools_by_handle if h not in s.initialised]
        elif mode == "03":  # initialised, not enabled
            handles = [h for h in s.initialised if h not in s.enabled]
        elif mode == "04":
            handles = sorted(s.enabled)
        else:
            handles = sorted(s.tools_by_handle)
        return ndi.text_reply(f"{len(handles):02X}" + "".join(f"{h:02X}001" for h in handles))

    def _cmd_phrq(self, s: _Session, params: str) -> bytes:
        h = max(s.tools_by_handle, default=0) + 1
        s.tools_by_handle[h] = bytearray(ndi.ROM_SIZE)
        return ndi.text_reply(f"{h:02X}")

    def _cmd_phf(self, s: _Session, params: str) -> bytes:
        h = int(params[:2] or "0", 16)
        s.tools_by_handle.pop(h, None)
        s.initialised.pop(h, None)
        s.enabled.discard(h)
        return ndi.text_reply("OKAY")

    def _cmd_pvwr(self, s: _Session, params: str) -> bytes:
        try:
            h, addr, data = int(params[:2], 16), int(params[2:6], 16), bytes.fromhex(params[6:])
        except ValueError:
            return ndi.error_reply(ndi.ERR_PARAMETERS)
        if h not in s.tools_by_handle:
            return ndi.error_reply(ndi.ERR_BAD_HANDLE)
        if len(data) != 64 or addr + 64 > ndi.ROM_SIZE:
            return ndi.error_reply(ndi.ERR_PARAMETERS)
        s.tools_by_handle[h][addr:addr + 64] = data
        return ndi.text_reply("OKAY")

    def _cmd_pinit(self, s: _Session, params: str) -> bytes:
        h = int(params[:2] or "0", 16)
        if h not in s.tools_by_handle:
            return ndi.error_reply(ndi.ERR_BAD_HANDLE)
        try:
            name, spheres = ndi.decode_tool_definition(bytes(s.tools_by_handle[h]))
        except ndi.NdiProtocolError:
            return ndi.error_reply(ndi.ERR_SROM_READ)
        if name not in self.index:
            return ndi.error_reply(ndi.ERR_SROM_READ)
        s.initialised[h] = name
        return ndi.text_reply("OKAY")

    def _cmd_pena(self, s: _Session, params: str) -> bytes:
        h = int(params[:2] or "0", 16)
        if h not in s.initialised:
            return ndi.error_reply(ndi.ERR_NOT_INITIALIZED)
        s.enabled.add(h)
        return ndi.text_reply("OKAY")

    def _cmd_tstart(self, s: _Session, params: str) -> bytes:
        s.tracking = True
        return ndi.text_reply("OKAY")

    def _cmd_tstop(self, s: _Session, params: str) -> bytes:
        s.tracking = False
        return ndi.text_reply("OKAY")

    def _measure(self, s: _Session) -> tuple[list[int], list[int], list[np.ndarray | None], list[float]]:
        frame = self.tracker.get_frame()
        self.last_frame, self.frames_served = frame, self.frames_served + 1
        _, _, numbers, tracking, quality = frame
        handles = sorted(s.enabled)
        fns, poses, errs = [], [], []
        for h in handles:
            i = self.index[s.initialised[h]]
            T = np.asarray(tracking[i], dtype=np.float64)
            fns.append(int(numbers[i]))
            if T.shape == (4, 4):
                ok = np.isfinite(T[:3]).all()
                q = frames.matrix_to_quat_xyzw(T[:3, :3]) if ok else None
                pose = np.r_[q[3], q[:3], T[:3, 3]] if ok else None
            else:  # a tracker configured with quaternions: (qw, qx, qy, qz, x, y, z)
                pose = T.reshape(-1)[:7] if np.isfinite(T).all() else None
            poses.append(pose)
            errs.append(float(quality[i]) if np.isfinite(quality[i]) else 0.0)
        return handles, fns, poses, errs

    def _cmd_bx(self, s: _Session, params: str) -> bytes:
        if not s.tracking:
            return ndi.error_reply(ndi.ERR_MODE)
        return ndi.bx_reply(*self._measure(s))

    def _cmd_tx(self, s: _Session, params: str) -> bytes:
        if not s.tracking:
            return ndi.error_reply(ndi.ERR_MODE)
        return ndi.tx_reply(*self._measure(s))
