"""The twin over OpenIGTLink (pyigtl), for 3D Slicer's OpenIGTLinkIF, SlicerIGT and PLUS-style clients.

What it serves, in the patient reference frame ``ref`` (mm), as SlicerIGT names them (OpenIGTLink's device
names hold 20 characters, so the needle guide is ``NeedleToReference``):
- ``TRANSFORM`` messages, streamed at ``rate_hz``: every tracked tool as ``<Tool>ToReference``
  (``NeedleToReference``, ``PointerToReference``, ``CArmToReference``, ``FlangeToReference``);
- ``POLYDATA``: the reconstructed vertebra (``Vertebra``) and both planned paths as lines (``PlannedPaths``),
  sent when they change and again to each newly connected client;
- ``IMAGE``: both X-rays (``XrayView1``, ``XrayView2``), 8-bit, one pixel per unit.

A tool the tracker does not see is not streamed (Slicer keeps its last transform and marks it
out of date), never streamed stale under a fresh timestamp.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from twinsim.errors import TwinsimError
from twinsim.view.timeline import Timeline

DEFAULT_PORT = 18944  # OpenIGTLink's registered port
TRANSFORM_NAMES = {"needle_guide": "NeedleToReference", "pointer": "PointerToReference", "carm": "CArmToReference",
                   "operation_flange": "FlangeToReference"}


class IgtlError(TwinsimError, OSError):
    """The OpenIGTLink server cannot start (the port is taken, or not a port)."""


class IgtlBridge:
    def __init__(self, port: int = DEFAULT_PORT, rate_hz: float = 60.0) -> None:
        import pyigtl

        if not 0 < port < 65536:
            raise IgtlError(f"the OpenIGTLink port must be 1-65535, got {port}")
        try:
            self.server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
        except OSError as exc:
            raise IgtlError(f"cannot serve OpenIGTLink on 127.0.0.1:{port} ({exc.strerror or exc})") from None
        self._pyigtl = pyigtl
        self.port, self.rate_hz = port, rate_hz
        self._lock = threading.Lock()
        self._transforms: dict[str, np.ndarray] = {}  # what is streamed now
        self._static: dict[str, Any] = {}  # polydata and images, by device name
        self._static_ids: dict[str, int] = {}
        self._was_connected = False
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, name="igtl-stream", daemon=True)
        self._thread.start()

    # ---- what the twin knows now ----------------------------------------------------------
    def show(self, tl: Timeline, sample: int) -> None:
        """The timeline at ``sample``: the transforms to stream from now on, and any changed polydata or image."""
        if sample < 0 or sample >= len(tl):
            return
        transforms = {}
        for i, name in enumerate(tl.tools):
            T = tl.T_ref_tools_mm[sample][i]
            if name in TRANSFORM_NAMES and np.isfinite(T).all():
                transforms[TRANSFORM_NAMES[name]] = np.asarray(T, dtype=np.float64)
        with self._lock:
            self._transforms = transforms
        for layer, make in (("vertebra", self._vertebra), ("paths", self._paths), ("xrays", self._xrays)):
            a = tl.layer_at(layer, sample)
            if a is not None and self._static_ids.get(layer) != id(a):
                self._static_ids[layer] = id(a)
                for device, message in make(a).items():
                    self._static[device] = message
                    self._send(message)

    def _vertebra(self, a: dict[str, np.ndarray]) -> dict[str, Any]:
        faces = np.asarray(a["faces"], dtype=np.uint32)
        polys = np.c_[np.full(len(faces), 3, dtype=np.uint32), faces].ravel()
        return {"Vertebra": self._pyigtl.PolyDataMessage(points=np.asarray(a["vertices_mm"], dtype=np.float32),
                                                         polygons=polys, device_name="Vertebra")}

    def _paths(self, a: dict[str, np.ndarray]) -> dict[str, Any]:
        pts = np.stack([a["start_mm"], a["target_mm"]], axis=1).reshape(-1, 3)  # each path: its start, then its target
        lines = np.array([[2, 2 * i, 2 * i + 1] for i in range(len(a["sides"]))], dtype=np.uint32).ravel()
        return {"PlannedPaths": self._pyigtl.PolyDataMessage(points=pts.astype(np.float32), lines=lines,
                                                             device_name="PlannedPaths")}

    def _xrays(self, a: dict[str, np.ndarray]) -> dict[str, Any]:
        out = {}
        for i in range(len(a["scale"])):
            name = f"XrayView{i + 1}"
            out[name] = self._pyigtl.ImageMessage(a[f"image_{i}"][np.newaxis], device_name=name)
        return out

    # ---- the wire -------------------------------------------------------------------------
    def _send(self, message: Any) -> None:
        if self.server.is_connected():
            self.server.send_message(message, wait=False)

    def _stream(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            connected = self.server.is_connected()
            if connected and not self._was_connected:  # a new client: what does not stream, once more
                for message in list(self._static.values()):
                    self.server.send_message(message, wait=False)
            self._was_connected = connected
            if connected:
                with self._lock:
                    transforms = dict(self._transforms)
                for device, T in transforms.items():
                    self.server.send_message(self._pyigtl.TransformMessage(T, device_name=device), wait=False)
                    self.sent += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        import signal

        self._stop.set()
        self._thread.join(timeout=2.0)
        self.server.stop()
        # pyigtl's server takes SIGINT and SIGTERM for itself; they go back to whoever held them.
        for sig, handler in getattr(self.server, "_previous_signal_handlers", {}).items():
            if handler is not None:
                signal.signal(sig, handler)
