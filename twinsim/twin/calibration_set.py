"""The calibration chain's results as one file: what a rig (simulated or real) has measured.

Format ``twinsim-calibration/1``, JSON, millimetres. Transforms follow ``T_<to>_<from>``:

- ``T_flange_marker``: the operation robot's flange marker (hand-eye, AX = XB);
- ``T_ref_base``: the operation robot's base in the patient reference frame (robot-world);
- ``T_flange_tool``: the needle guide's tip (TCP) in the flange frame, axis along z;
- ``T_ref_ct``: the CT (RAS mm) in the patient reference frame (paired points + surface ICP);
- ``pointer_tip_mm`` / ``needle_tip_mm``: pivot-calibrated tips in their markers' frames.

Each comes with its residuals under ``residuals``. Files are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.report import write_json

FORMAT = "twinsim-calibration/1"
TRANSFORMS = ("T_flange_marker", "T_ref_base", "T_flange_tool", "T_ref_ct")
POINTS = ("pointer_tip_mm", "needle_tip_mm")


class CalibrationFileError(ValueError):
    """A calibration file is missing, malformed, or of another format."""


@dataclass
class CalibrationSet:
    T_flange_marker: np.ndarray
    T_ref_base: np.ndarray
    T_flange_tool: np.ndarray
    T_ref_ct: np.ndarray
    pointer_tip_mm: np.ndarray
    needle_tip_mm: np.ndarray
    residuals: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "units": "mm",
            **{k: np.round(getattr(self, k), 9).tolist() for k in TRANSFORMS + POINTS},
            "residuals": self.residuals,
            "meta": self.meta,
        }


def save_calibration(cal: CalibrationSet, path: str | Path) -> Path:
    return write_json(path, cal.to_json())


def load_calibration(path: str | Path) -> CalibrationSet:
    p = Path(path)
    if not p.is_file():
        raise CalibrationFileError(f"calibration file not found: {p} (run `twinsim calibrate` first)")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise CalibrationFileError(f"calibration file {p} is not valid JSON: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CalibrationFileError(f"{p}: not a {FORMAT} file (format {d.get('format') if isinstance(d, dict) else None!r})")
    missing = [k for k in TRANSFORMS + POINTS if k not in d]
    if missing:
        raise CalibrationFileError(f"{p}: missing {', '.join(missing)}")
    try:
        Ts = {k: frames.as_transform(d[k], k) for k in TRANSFORMS}
    except (frames.FrameError, ValueError, TypeError) as exc:
        raise CalibrationFileError(f"{p}: {exc}") from exc
    pts = {}
    for k in POINTS:
        a = np.asarray(d[k], dtype=np.float64) if isinstance(d[k], list) else np.empty(0)
        if a.shape != (3,) or not np.isfinite(a).all():
            raise CalibrationFileError(f"{p}: {k} must be [x, y, z] in mm, got {d[k]!r}")
        pts[k] = a
    return CalibrationSet(**Ts, **pts, residuals=dict(d.get("residuals", {})), meta=dict(d.get("meta", {})))
