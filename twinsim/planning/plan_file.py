"""The ``twinsim-plan/1`` file: both paths with their clearances and verdicts, written atomically.

JSON, millimetres, in the frame of the X-rays' geometry (``frame``)::

    {"format": "twinsim-plan/1", "level": "L1", "frame": "ct", "safe": false, "convergence_deg": 29.2,
     "paths": {"left": {"entry_mm": [x, y, z], "target_mm": [...], "axis": [...], "length_mm": 43.1,
                        "cannula_diameter_mm": 5.0, "min_clearance_mm": 4.28, "safe": true, "reasons": [], ...},
               "right": {...}},
     "settings": {...}, "source": {...}, "created": "..."}

A path with ``"safe": false`` carries its reasons; ``load_plan`` refuses a file whose numbers
disagree with each other (an axis that is not the entry-to-target direction, a length that is
not their distance), so a hand-edited file cannot slip an inconsistent path to the robot.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.errors import TwinsimError
from twinsim.planning.planner import SIDES, PathPlan, VertebraPlan
from twinsim.planning.settings import PlanSettings, PlanSettingsError
from twinsim.report import read_json, write_json

FORMAT = "twinsim-plan/1"
_PATH_FLOATS = ("min_clearance_mm", "clearance_at_depth_mm", "tip_to_cortex_mm", "tip_depth_fraction", "medial_angle_deg", "tilt_deg")


class PlanFileError(TwinsimError, ValueError):
    """A plan file is missing, malformed or inconsistent."""


def plan_to_dict(plan: VertebraPlan, level: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    paths = {}
    for side, p in plan.paths.items():
        paths[side] = {"entry_mm": p.entry_mm.tolist(), "target_mm": p.target_mm.tolist(), "axis": p.axis.tolist(),
                       "length_mm": p.length_mm, "cannula_diameter_mm": plan.settings.cannula_diameter_mm,
                       "method": p.method, **{k: float(getattr(p, k)) for k in _PATH_FLOATS},
                       "clearance_region": p.clearance_region, "nearest_wall": p.nearest_wall,
                       "safe": bool(p.safe), "reasons": list(p.reasons)}
    return {"format": FORMAT, "level": level, "frame": plan.frame, "units": "mm", "safe": plan.safe,
            "convergence_deg": plan.convergence_deg, "paths": paths, "settings": plan.settings_dict(),
            "source": source or {}, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def save_plan(path: str | Path, plan: VertebraPlan, level: str, source: dict[str, Any] | None = None) -> Path:
    return write_json(path, plan_to_dict(plan, level, source))


def _vec(d: dict[str, Any], key: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except KeyError as exc:
        raise PlanFileError(f"{where}: missing '{key}'") from exc
    except (TypeError, ValueError) as exc:
        raise PlanFileError(f"{where}: '{key}' is not a list of numbers") from exc
    if a.shape != (3,) or not np.isfinite(a).all():
        raise PlanFileError(f"{where}: '{key}' must be 3 finite numbers (mm), got {d[key]!r}")
    return a


def load_plan(path: str | Path) -> tuple[VertebraPlan, dict[str, Any]]:
    """The plan and the raw file contents; refuses anything missing, malformed or inconsistent."""
    path = Path(path)
    d = read_json(path, PlanFileError, "plan file")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PlanFileError(f"plan file {path} is not a {FORMAT!r} file (format: {d.get('format') if isinstance(d, dict) else None!r})")
    paths = d.get("paths")
    if not isinstance(paths, dict) or sorted(paths) != sorted(SIDES):
        raise PlanFileError(f"plan file {path}: 'paths' must hold exactly 'left' and 'right'")
    try:
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.get("settings", {}).items()}
        settings = PlanSettings(**values)
    except (TypeError, PlanSettingsError) as exc:
        raise PlanFileError(f"plan file {path}: unknown or malformed settings ({exc})") from exc
    out = {}
    for side in SIDES:
        p, where = paths[side], f"plan file {path}, {side} path"
        if not isinstance(p, dict):
            raise PlanFileError(f"{where}: must be an object")
        entry, target, axis = _vec(p, "entry_mm", where), _vec(p, "target_mm", where), _vec(p, "axis", where)
        length = float(np.linalg.norm(target - entry))
        if length < 1.0:
            raise PlanFileError(f"{where}: entry and target are {length:.2f} mm apart; a path needs a direction")
        if np.linalg.norm(axis - (target - entry) / length) > 1e-3:
            raise PlanFileError(f"{where}: 'axis' is not the unit direction from entry to target")
        if not isinstance(p.get("length_mm"), (int, float)) or abs(p["length_mm"] - length) > 1e-3:
            raise PlanFileError(f"{where}: 'length_mm' ({p.get('length_mm')!r}) is not the entry-target distance ({length:.3f} mm)")
        if p.get("cannula_diameter_mm") != settings.cannula_diameter_mm:
            raise PlanFileError(f"{where}: 'cannula_diameter_mm' disagrees with the settings ({settings.cannula_diameter_mm} mm)")
        if not isinstance(p.get("safe"), bool) or not isinstance(p.get("reasons"), list):
            raise PlanFileError(f"{where}: needs 'safe' (true/false) and 'reasons' (a list)")
        if not p["safe"] and not p["reasons"]:
            raise PlanFileError(f"{where}: marked unsafe without a reason")
        if p["safe"] and p["reasons"]:
            raise PlanFileError(f"{where}: marked safe but lists reasons against it")
        plan = PathPlan(side, entry, target, str(p.get("method", "given")), safe=p["safe"], reasons=[str(r) for r in p["reasons"]],
                        clearance_region=str(p.get("clearance_region", "")), nearest_wall=str(p.get("nearest_wall", "")))
        for k in _PATH_FLOATS:
            if k in p:
                setattr(plan, k, float(p[k]))
        out[side] = plan
    return VertebraPlan(out, float(d.get("convergence_deg", float("nan"))), settings, str(d.get("frame", ""))), d
