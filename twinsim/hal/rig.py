"""Rig files (``hardware/*.yaml``): which devices a run talks to, validated with pydantic.

``kind: sim`` is the simulated room of a scene file; ``kind: lab`` names real devices (robot
addresses for franky, the NDI tracker's address and one tool-definition file per marker, the
C-arm's image folder and calibration). Unknown or misspelt keys are errors. Relative paths are
relative to the rig file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twinsim.hal.errors import RigFileError
from twinsim.paths import bundled
from twinsim.report import read_yaml_mapping, validation_problems
from twinsim.tracking.tools import TRACKED_TOOLS

RIG_FORMAT = "twinsim-rig/1"
HARDWARE_DIR = bundled("hardware")
DEFAULT_RIG = HARDWARE_DIR / "sim.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimCArmSettings(_Strict):
    size_px: Annotated[int, Field(gt=16, le=4096)] = 256
    samples: Annotated[int, Field(gt=8, le=4096)] = 256


class SimRig(_Strict):
    format: Literal["twinsim-rig/1"]
    name: str
    kind: Literal["sim"]
    scene: Path | None = None  # None: scenarios/rooms/default.yaml
    seed: int = 0
    calibration: Path | None = None
    carm: SimCArmSettings = SimCArmSettings()


class FrankaSettings(_Strict):
    hostname: str
    realtime: bool = True  # False only for franky-sim or a machine without a realtime kernel


class NdiTrackerSettings(_Strict):
    type: Literal["vega", "polaris"] = "vega"
    ip_address: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 8765
    tools: dict[str, Path]  # tool name -> NDI tool definition (.rom)
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, v: dict[str, Path]) -> dict[str, Path]:
        unknown = sorted(set(v) - set(TRACKED_TOOLS))
        if unknown:
            raise ValueError(f"unknown tool names {unknown}; twinsim tracks {list(TRACKED_TOOLS)}")
        missing = sorted(set(TRACKED_TOOLS) - set(v))
        if missing:
            raise ValueError(f"no tool definition for {missing}")
        return v


class FolderCArmSettings(_Strict):
    image_folder: Path
    calibration: Path
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    phantom: Path | None = None  # twinsim-carm-phantom/1: bead phantom for `twinsim calibrate carm`


class LabRig(_Strict):
    format: Literal["twinsim-rig/1"]
    name: str
    kind: Literal["lab"]
    scene: Path | None = None  # the twin's model of the room and the patient's planning data
    robots: dict[Literal["operation", "navigation"], FrankaSettings]
    tracker: NdiTrackerSettings
    carm: FolderCArmSettings
    calibration: Path | None = None


class _RigFile(_Strict):
    rig: Annotated[SimRig | LabRig, Field(discriminator="kind")]


def _resolve(p: Path | None, base: Path) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_rig(path: str | Path | None = None) -> SimRig | LabRig:
    """Read and validate a rig file; relative paths come back resolved against its folder."""
    path = Path(path) if path else DEFAULT_RIG
    data = read_yaml_mapping(path, RigFileError, "rig file", f"format: {RIG_FORMAT}, kind: sim or lab, ...")
    try:
        rig = _RigFile.model_validate({"rig": data}).rig
    except ValidationError as exc:
        # The location starts with the wrapper's field and the rig's kind: not keys of the file.
        raise RigFileError(f"{path}: {validation_problems(exc, skip=2)}") from None
    base = path.resolve().parent
    updates: dict[str, object] = {"scene": _resolve(rig.scene, base), "calibration": _resolve(rig.calibration, base)}
    if isinstance(rig, LabRig):
        updates["tracker"] = rig.tracker.model_copy(update={"tools": {k: _resolve(v, base) for k, v in rig.tracker.tools.items()}})
        updates["carm"] = rig.carm.model_copy(update={"image_folder": _resolve(rig.carm.image_folder, base),
                                                      "calibration": _resolve(rig.carm.calibration, base),
                                                      "phantom": _resolve(rig.carm.phantom, base)})
    return rig.model_copy(update=updates)
