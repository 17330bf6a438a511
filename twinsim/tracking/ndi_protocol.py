"""The part of NDI's combined API that scikit-surgerynditracker (through ndicapi) speaks.

Framing, as ndicapi sends and checks it: a command is ASCII, ``NAME:params`` followed by a
CRC16 of everything before it (4 upper-case hex digits) and a carriage return. A text reply
is the reply text, its CRC16 and a carriage return; an error is ``ERRORxx``. The binary
reply to ``BX`` is ``0xA5C4`` (little endian), the body length (2 bytes), a CRC16 of those
4 header bytes, the body and a CRC16 of the body. The CRC is NDI's: polynomial
x^16 + x^15 + x^2 + 1, reflected, initial value 0 (CRC-16/ARC).

Tool definitions: ndicapi uploads a tool file with ``PVWR`` in 64-byte chunks (1 KiB, zero
padded). twinsim's ``.rom`` files are not NDI's binary SROM layout, which NDI does not
publish: they hold the tool's name and sphere geometry (:func:`encode_tool_definition`),
which the simulated Vega maps to its tools. A lab uses its own NDI ``.rom`` files with a
real Vega.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROM_SIZE = 1024  # ndiPVWRFromFile reads and uploads at most 1 KiB
ROM_MAGIC = b"TWINSIM-TOOL/1\n"
BX_START = 0xA5C4
HANDLE_VALID, HANDLE_MISSING, HANDLE_DISABLED = 0x01, 0x02, 0x04
# NDI error codes the peer answers with (NDI Combined API).
ERR_INVALID_COMMAND, ERR_BAD_CRC, ERR_PARAMETERS, ERR_BAD_HANDLE, ERR_MODE = 0x01, 0x04, 0x07, 0x08, 0x0C
ERR_NOT_INITIALIZED, ERR_SROM_READ = 0x0E, 0x1E


class NdiProtocolError(ValueError):
    """A message that does not follow the NDI combined API framing."""


def crc16(data: bytes, crc: int = 0) -> int:
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_command(text: str) -> bytes:
    """A command as ndicapi sends it (CRC only when the name is followed by ':')."""
    raw = text.encode("ascii")
    if ":" in text:
        raw += f"{crc16(raw):04X}".encode()
    return raw + b"\r"


def decode_command(raw: bytes) -> tuple[str, str]:
    """(name, parameters) of one command without its carriage return; checks the CRC."""
    text = raw.decode("ascii", errors="replace")
    if ":" not in text:
        return text.strip(), ""
    name, rest = text.split(":", 1)
    if len(rest) < 4:
        raise NdiProtocolError(f"command {text!r} is too short to carry a CRC")
    body, crc = raw[:-4], rest[-4:]
    try:
        ok = int(crc, 16) == crc16(body)
    except ValueError:
        ok = False
    if not ok:
        raise NdiProtocolError(f"bad CRC on command {text!r}")
    return name, rest[:-4]


def text_reply(text: str) -> bytes:
    raw = text.encode("ascii")
    return raw + f"{crc16(raw):04X}".encode() + b"\r"


def error_reply(code: int) -> bytes:
    return text_reply(f"ERROR{code:02X}")


def _body_transforms(handles: Sequence[int], frame_numbers: Sequence[int], poses: Sequence[np.ndarray | None],
                     errors_mm: Sequence[float]) -> bytes:
    out = bytearray([len(handles)])
    for h, fn, pose, err in zip(handles, frame_numbers, poses, errors_mm, strict=True):
        if pose is None:
            out += struct.pack("<BB", h, HANDLE_MISSING)
        else:
            out += struct.pack("<BB8f", h, HANDLE_VALID, *pose, err)
        out += struct.pack("<II", 0x01 | 0x02 | 0x04 | 0x08, fn & 0xFFFFFFFF)  # occupied, switches off, initialised, enabled
    out += struct.pack("<H", 0)  # system status: no faults
    return bytes(out)


def bx_reply(handles: Sequence[int], frame_numbers: Sequence[int], poses: Sequence[np.ndarray | None],
             errors_mm: Sequence[float]) -> bytes:
    """The binary BX reply (transforms and status) for poses ``(qw, qx, qy, qz, x, y, z)`` mm, None = missing."""
    body = _body_transforms(handles, frame_numbers, poses, errors_mm)
    header = struct.pack("<HH", BX_START, len(body))
    return header + struct.pack("<H", crc16(header)) + body + struct.pack("<H", crc16(body))


def _signed(value: float, digits: int, scale: float) -> str:
    v = int(round(value / scale))
    limit = 10**digits - 1
    v = max(-limit, min(limit, v))
    return f"{'+' if v >= 0 else '-'}{abs(v):0{digits}d}"


def tx_reply(handles: Sequence[int], frame_numbers: Sequence[int], poses: Sequence[np.ndarray | None],
             errors_mm: Sequence[float]) -> bytes:
    """The text TX reply (transforms and status): quaternion to 1e-4, position to 0.01 mm."""
    parts = [f"{len(handles):02X}"]
    for h, fn, pose, err in zip(handles, frame_numbers, poses, errors_mm, strict=True):
        if pose is None:
            xf = "MISSING"
        else:
            xf = ("".join(_signed(q, 5, 1e-4) for q in pose[:4]) + "".join(_signed(t, 6, 0.01) for t in pose[4:7])
                  + _signed(err, 5, 1e-4))
        parts.append(f"{h:02X}{xf}{0x0F:08X}{fn & 0xFFFFFFFF:08X}\n")
    parts.append("0000")
    return text_reply("".join(parts))


def encode_tool_definition(name: str, spheres_mm: np.ndarray) -> bytes:
    """A twinsim tool-definition file (see the module docstring), at most 1 KiB."""
    doc = {"name": name, "spheres_mm": np.round(np.asarray(spheres_mm, dtype=float), 4).tolist()}
    raw = ROM_MAGIC + json.dumps(doc, separators=(",", ":")).encode() + b"\0"
    if len(raw) > ROM_SIZE:
        raise ValueError(f"tool definition for {name!r} is {len(raw)} bytes; ndicapi uploads at most {ROM_SIZE}")
    return raw


def decode_tool_definition(raw: bytes) -> tuple[str, np.ndarray]:
    """(name, spheres_mm) of an uploaded tool definition; NdiProtocolError for anything else."""
    if not raw.startswith(ROM_MAGIC):
        raise NdiProtocolError("not a twinsim tool definition (an NDI .rom from 6D Architect needs a real Vega)")
    body = raw[len(ROM_MAGIC):].split(b"\0", 1)[0]
    try:
        doc = json.loads(body)
        return str(doc["name"]), np.asarray(doc["spheres_mm"], dtype=float).reshape(-1, 3)
    except (ValueError, KeyError, TypeError) as exc:
        raise NdiProtocolError(f"malformed twinsim tool definition: {exc}") from exc


def write_tool_definitions(out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<tool>.rom`` beside each marker geometry in ``assets/markers`` (the shipped files)."""
    from twinsim.tracking.markers import MARKERS_DIR, load_marker

    out = Path(out_dir) if out_dir else MARKERS_DIR
    written = []
    for geometry in sorted(MARKERS_DIR.glob("*.json")):
        m = load_marker(geometry.stem)
        path = out / f"{m.name}.rom"
        tmp = path.with_suffix(".rom.tmp")
        tmp.write_bytes(encode_tool_definition(m.name, m.spheres_mm))
        tmp.replace(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_tool_definitions():
        print(f"wrote {p}")
