"""A C-arm whose images arrive as DICOM or PNG files in a folder, with geometry from a calibration file.

The radiographer turns the C-arm (prompted through the operator) and exposes; the image
lands in the watched folder (the C-arm's DICOM export or a frame grabber). The projection
geometry of each view comes from the C-arm calibration file, ``twinsim-carm-calibration/1``:

    {"format": "twinsim-carm-calibration/1", "frame": "ref",
     "views": {"AP": {"lao_deg": 0, "cranial_deg": 0, "geometry": <ProjectionGeometry dict>}, ...}}

(how that file is made is the C-arm calibration issue's; here it is an input).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.hal.errors import ConnectionLost, HalError, RigFileError
from twinsim.hal.exposure_file import read_exposure
from twinsim.hal.interfaces import CArmView
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.report import read_json

CARM_CALIBRATION_FORMAT = "twinsim-carm-calibration/1"
IMAGE_SUFFIXES = (".dcm", ".png")


def load_carm_calibration(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    doc = read_json(p, RigFileError, "C-arm calibration file")
    if not isinstance(doc, dict) or doc.get("format") != CARM_CALIBRATION_FORMAT or not isinstance(doc.get("views"), dict):
        raise RigFileError(f"{p}: not a {CARM_CALIBRATION_FORMAT} file with a 'views' mapping")
    return doc


def view_geometry(calibration: dict[str, Any], view: str) -> ProjectionGeometry:
    g = calibration["views"][view].get("geometry", {})
    try:
        return ProjectionGeometry(float(g["sdd_mm"]), int(g["width_px"]), int(g["height_px"]),
                                  tuple(float(v) for v in g["pixel_spacing_mm"]), np.asarray(g["T_frame_source_mm"], dtype=float),
                                  str(calibration.get("frame", "ref")), tuple(float(v) for v in g.get("principal_offset_mm", (0, 0))))
    except (KeyError, TypeError, ValueError) as exc:
        raise RigFileError(f"C-arm calibration of view {view!r}: bad or missing geometry entry ({exc})") from exc


class FolderCArm:
    def __init__(self, folder: str | Path, calibration: str | Path, name: str = "carm", timeout_s: float = 120.0,
                 operator: Any = None) -> None:
        self.name, self.folder, self.timeout_s, self.operator = name, Path(folder), timeout_s, operator
        if not self.folder.is_dir():
            raise ConnectionLost(name, f"image folder not found: {self.folder}")
        self.calibration = load_carm_calibration(calibration)
        self.view: CArmView | None = None
        self._seen = {p.name for p in self.folder.iterdir()}

    def move_to(self, view: CArmView) -> None:
        if view.name not in self.calibration["views"]:
            raise HalError(self.name, f"no calibrated geometry for view {view.name!r}; calibrated views: "
                                      f"{sorted(self.calibration['views'])}")
        if self.operator is not None:
            self.operator.say(f"Turn the C-arm to {view.name} (LAO {view.lao_deg:g} deg, cranial {view.cranial_deg:g} deg).")
        self.view = view

    def acquire(self) -> Acquisition:
        if self.view is None:
            raise HalError(self.name, "acquire called before move_to: which calibrated view is this?")
        if self.operator is not None:
            self.operator.say(f"Expose now; waiting up to {self.timeout_s:g} s for the image in {self.folder}.")
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            new = sorted(p for p in self.folder.iterdir() if p.name not in self._seen and p.suffix.lower() in IMAGE_SUFFIXES)
            if new:
                path = new[0]
                self._seen.add(path.name)
                geom = view_geometry(self.calibration, self.view.name)
                image = read_exposure(path, geom.width_px, geom.height_px, self.name, self.view.name)
                return Acquisition(image=image, geometry=geom,
                                   view={"name": self.view.name, "lao_deg": self.view.lao_deg,
                                         "cranial_deg": self.view.cranial_deg},
                                   meta={"source": str(path), "carm_calibration": CARM_CALIBRATION_FORMAT})
            time.sleep(0.05)
        raise ConnectionLost(self.name, f"no image arrived in {self.folder} within {self.timeout_s:g} s")

    def park(self) -> None:
        if self.operator is None or not hasattr(self.operator, "confirm"):
            raise HalError(self.name, "the C-arm must be rolled away from the table, and there is nobody to ask")
        self.operator.confirm("Roll the C-arm away from the table, clear of the robot's workspace.")
        self.view = None

    def close(self) -> None:
        pass
