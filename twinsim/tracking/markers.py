"""Passive marker tools: four 11.5 mm spheres, identified by their inter-sphere distances.

The geometry files in ``assets/markers/`` are twinsim's equivalent of NDI tool definition
(.rom) files: sphere centres in the tool frame, millimetres.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinsim import frames
from twinsim.errors import TwinsimError
from twinsim.paths import bundled

MARKERS_DIR = bundled("assets") / "markers"
MIN_DISTANCE_DIFFERENCE_MM = 3.0  # two tools closer than this in every distance are ambiguous


class MarkerError(TwinsimError, ValueError):
    """A marker geometry is missing, malformed or ambiguous."""


@dataclass(frozen=True)
class MarkerGeometry:
    name: str
    spheres_mm: np.ndarray  # (N, 3), tool frame
    sphere_diameter_mm: float = 11.5

    def distances_mm(self) -> np.ndarray:
        return np.sort([np.linalg.norm(a - b) for a, b in itertools.combinations(self.spheres_mm, 2)])


def load_marker(name_or_path: str | Path) -> MarkerGeometry:
    p = Path(name_or_path)
    if p.suffix != ".json":
        p = MARKERS_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise MarkerError(f"marker geometry not found: {p}")
    try:
        d = json.loads(p.read_text())
        spheres = np.asarray(d["spheres_mm"], dtype=np.float64)
        diameter = float(d.get("sphere_diameter_mm", 11.5))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MarkerError(f"marker geometry {p} is malformed: {exc}") from exc
    if spheres.ndim != 2 or spheres.shape[1] != 3 or len(spheres) < 3:
        raise MarkerError(f"marker geometry {p}: needs at least 3 spheres as [x, y, z] in mm, got shape {spheres.shape}")
    centred = spheres - spheres.mean(0)
    if np.linalg.svd(centred, compute_uv=False)[1] < 1.0:
        raise MarkerError(f"marker geometry {p}: spheres are (nearly) collinear; the tool's rotation would be undefined")
    return MarkerGeometry(str(d.get("name", p.stem)), spheres, diameter)


def check_distinguishable(markers: list[MarkerGeometry]) -> None:
    """Refuse a tool set in which two tools could be mistaken for each other."""
    for a, b in itertools.combinations(markers, 2):
        if len(a.spheres_mm) == len(b.spheres_mm) and np.abs(a.distances_mm() - b.distances_mm()).max() < MIN_DISTANCE_DIFFERENCE_MM:
            raise MarkerError(f"markers {a.name} and {b.name} have near-identical sphere distances; a tracker cannot tell them apart")


def fit_marker(model_mm: np.ndarray, measured_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Rigid fit of the tool geometry to measured spheres: (T_measured_tool (mm), RMS residual mm)."""
    T = frames.rigid_fit(model_mm, measured_mm)
    residual = frames.transform_points(T, model_mm) - measured_mm
    return T, float(np.sqrt((residual**2).sum(axis=1).mean()))
