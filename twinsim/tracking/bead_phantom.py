"""The C-arm calibration's bead phantom: its description and its file (``twinsim-carm-phantom/1``).

A device description, below the workflows: the simulated phantom driver builds one and the
calibration workflow solves with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinsim.tracking.calibration import CalibrationError

PHANTOM_FORMAT = "twinsim-carm-phantom/1"


@dataclass
class CArmPhantom:
    """A bead phantom clamped to the patient reference, and the nominal calibration the solve starts from.

    ``beads_ref_mm``: bead centres in the reference marker's frame (measured once, e.g. on a
    coordinate measuring machine, with the phantom in its clamp); ``nominal_*``: the C-arm's
    CAD or a pointer survey of its housings. ``mount``/``unmount`` put it in the beam and take
    it out again (a person's step; in the simulated room it appears in the DRRs).
    """

    beads_ref_mm: np.ndarray
    bead_radius_mm: float
    nominal_sdd_mm: float
    nominal_T_marker_source_mm: np.ndarray
    mount: Callable[[], None] = field(default=lambda: None)
    unmount: Callable[[], None] = field(default=lambda: None)


def load_phantom(path: str | Path) -> CArmPhantom:
    """Read a ``twinsim-carm-phantom/1`` JSON file (mm); errors name the file and the entry."""
    from twinsim import frames

    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"C-arm phantom file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"C-arm phantom file {path} is not valid JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != PHANTOM_FORMAT:
        raise CalibrationError(f"{path}: not a {PHANTOM_FORMAT} file")
    try:
        beads = np.asarray(d["beads_ref_mm"], dtype=np.float64)
        radius, sdd = float(d["bead_radius_mm"]), float(d["nominal_sdd_mm"])
        T = frames.as_transform(d["nominal_T_marker_source_mm"], "nominal_T_marker_source_mm")
    except KeyError as exc:
        raise CalibrationError(f"{path}: missing {exc.args[0]}") from None
    except (TypeError, ValueError, frames.FrameError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None
    if beads.ndim != 2 or beads.shape[1] != 3 or len(beads) < 6 or not np.isfinite(beads).all():
        raise CalibrationError(f"{path}: beads_ref_mm must be at least 6 [x, y, z] rows in mm, got shape {beads.shape}")
    if not (radius > 0 and sdd > 0):
        raise CalibrationError(f"{path}: bead_radius_mm and nominal_sdd_mm must be positive")
    return CArmPhantom(beads, radius, sdd, T)
