"""The calibration chain's results as one file: what a rig (simulated or real) has measured.

Format ``twinsim-calibration/1``, JSON, millimetres. Transforms follow ``T_<to>_<from>``:

- ``T_flange_marker``: the operation robot's flange marker (hand-eye, AX = XB);
- ``T_ref_base``: the operation robot's base in the patient reference frame (robot-world);
- ``T_flange_tool``: the needle guide's tip (TCP) in the flange frame, axis along z;
- ``T_ref_ct``: the CT (RAS mm) in the patient reference frame (paired points + surface ICP);
- ``pointer_tip_mm`` / ``needle_tip_mm``: pivot-calibrated tips in their markers' frames;
- ``needle_axis``: the guide's bore direction (unit, pointing from the flange
  towards the tip) in the needle-guide marker's frame, from pivots at two depths;
- ``carm`` (once ``twinsim calibrate carm`` has run): the C-arm's intrinsics and
  ``T_marker_source_mm`` (its tracked marker to the focal spot), which turn a tracked
  exposure into a projection geometry in ``ref``.

Each comes with its residuals under ``residuals``. Files are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.errors import TwinsimError
from twinsim.report import write_json
from twinsim.tracking.calibration import CalibrationError
from twinsim.tracking.carm_calibration import CArmCalibrationResult

FORMAT = "twinsim-calibration/1"
TRANSFORMS = ("T_flange_marker", "T_ref_base", "T_flange_tool", "T_ref_ct")
POINTS = ("pointer_tip_mm", "needle_tip_mm", "needle_axis")


class CalibrationFileError(TwinsimError, ValueError):
    """A calibration file is missing, malformed, or of another format."""


@dataclass
class CalibrationSet:
    T_flange_marker: np.ndarray
    T_ref_base: np.ndarray
    T_flange_tool: np.ndarray
    T_ref_ct: np.ndarray
    pointer_tip_mm: np.ndarray
    needle_tip_mm: np.ndarray
    needle_axis: np.ndarray
    residuals: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    carm: CArmCalibrationResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "units": "mm",
            **{k: np.round(getattr(self, k), 9).tolist() for k in TRANSFORMS + POINTS},
            **({"carm": self.carm.to_dict()} if self.carm is not None else {}),
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
    if abs(np.linalg.norm(pts["needle_axis"]) - 1.0) > 1e-6:
        raise CalibrationFileError(f"{p}: needle_axis must be a unit vector, got length {np.linalg.norm(pts['needle_axis']):.6f}")
    try:
        carm = CArmCalibrationResult.from_dict(d["carm"], f"{p}: carm") if "carm" in d else None
    except CalibrationError as exc:
        raise CalibrationFileError(str(exc)) from None
    return CalibrationSet(**Ts, **pts, residuals=dict(d.get("residuals", {})), meta=dict(d.get("meta", {})), carm=carm)
