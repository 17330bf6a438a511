"""scikit-surgerynditracker's ``NDITracker``, with the receive timeout ndicapi lacks.

ndicapi blocks in ``recv`` for ever when a tracker goes silent, holding Python's GIL in some
calls, so no watchdog thread could step in. Instead the socket ndicapi opens gets a kernel
receive and send timeout right after it connects: a silent or dead peer then makes the
ndicapi call fail within ``timeout_s``, and every frame is checked for that failure, so a
stale pose is never returned. Everything else is the driver's own code path (``ping``, INIT,
tool upload, BX or TX frames).

A driver bug worked around here: ndicapy (3.7.6) returns every reply as a UTF-8 string, BX's
binary reply included, so a BX frame whose bytes are not valid UTF-8 (any reply for three or
more tools: its length byte is >= 0x80) raises UnicodeDecodeError after ndicapi has parsed it
correctly. The driver ignores that return value, so the capture command's decode error is
dropped and the parsed frame used; errors still come from ``ndiGetError``.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from subprocess import DEVNULL, call
from typing import Any

from twinsim.hal.errors import ConnectionLost

DEFAULT_TIMEOUT_S = 2.0


def _socket_fds() -> set[int]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                out.add(int(fd))
        except OSError:
            continue
    return out


def _set_timeouts(fd: int, timeout_s: float) -> None:
    s = socket.socket(fileno=os.dup(fd))  # a duplicate shares the socket; options apply to ndicapi's too
    try:
        tv = struct.pack("ll", int(timeout_s), int((timeout_s % 1) * 1e6))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    finally:
        s.close()


class _BinaryTolerantNdicapy:
    """ndicapy, but a BX reply that is not valid UTF-8 is not an error (see the module docstring)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def ndiCommand(self, device: Any, command: str, *args: Any) -> str:  # noqa: N802 (ndicapy's name)
        try:
            return self._module.ndiCommand(device, command, *args)
        except UnicodeDecodeError:
            if str(command).startswith("BX"):
                return ""
            raise


def _patch_driver() -> None:
    from sksurgerynditracker import nditracker

    if not isinstance(nditracker.ndicapy, _BinaryTolerantNdicapy):
        nditracker.ndicapy = _BinaryTolerantNdicapy(nditracker.ndicapy)


def open_ndi_tracker(configuration: dict[str, Any], name: str = "tracker", timeout_s: float = DEFAULT_TIMEOUT_S,
                     tool_names: list[str] | None = None) -> Any:
    """An ``NDITracker`` subclass instance connected per ``configuration`` (the driver's own keys).

    ``tool_names``: the name of each ``romfiles`` entry, in order (default: the file stems).
    """
    import ndicapy
    from sksurgerynditracker.nditracker import NDITracker

    class GuardedNDITracker(NDITracker):
        def _connect_network(self, configuration: dict[str, Any]) -> None:
            ip, port = configuration.get("ip address"), int(configuration.get("port", 8765))
            # As the driver does: ping first, so an absent device fails fast.
            if call(["ping", "-c", "1", "-W", "1", str(ip)], stdout=DEVNULL, stderr=DEVNULL) != 0:
                raise ConnectionLost(name, f"no device answers ping at {ip}")
            before = _socket_fds()
            self._device = ndicapy.ndiOpenNetwork(str(ip), port)
            if not self._device:
                raise ConnectionLost(name, f"could not connect to an NDI tracker at {ip}:{port}")
            for fd in _socket_fds() - before:
                _set_timeouts(fd, timeout_s)
            try:
                ndicapy.ndiCommand(self._device, "INIT:")
            except OSError as exc:
                raise ConnectionLost(name, f"no NDI tracker answers at {ip}:{port} ({exc})") from exc
            self._check_for_errors("sending INIT")

        def _check_for_errors(self, message: str) -> None:
            err = ndicapy.ndiGetError(self._device)
            if err != ndicapy.NDI_OKAY:
                raise ConnectionLost(name, f"error when {message}: {ndicapy.ndiErrorString(err)} "
                                           f"(no valid reply within {timeout_s:g} s, or the tracker refused it)")

        def get_frame(self) -> tuple:
            try:
                frame = super().get_frame()
            except OSError as exc:  # ndicapy raises its errors as OSError
                raise ConnectionLost(name, f"error when reading a frame: {exc} (no valid reply within {timeout_s:g} s, "
                                           "or the connection dropped)") from exc
            self._check_for_errors("reading a frame")
            return frame

        def get_tool_descriptions(self) -> tuple[list, list]:
            # The driver describes a tool by its ROM file path; workflows know tools by name.
            handles, descriptions = super().get_tool_descriptions()
            by_file = dict(zip(configuration.get("romfiles", []), tool_names or [], strict=False))
            return handles, [by_file.get(str(d), Path(str(d)).stem) for d in descriptions]

    _patch_driver()
    for rom in configuration.get("romfiles", []):
        if not Path(rom).is_file():
            raise ConnectionLost(name, f"tool definition file not found: {rom}")
    try:
        return GuardedNDITracker(dict(configuration))
    except ConnectionLost:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ConnectionLost(name, f"could not start the NDI tracker: {exc}") from exc
