"""Where the simulated clinician sees each landmark: the shape model's own points on the true vertebra.

The model is fitted to the ground-truth surface once per patient, level and model, and the
result is cached (the fit takes tens of seconds), so rehearsals start quickly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinsim.anatomy.patient import Patient
from twinsim.evaluation.realistic_clicks import Clinician, neighbour_offset_mm
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.paths import cache_home
from twinsim.report import write_json

if TYPE_CHECKING:
    from twinsim.hal.sim.carm import SimCArm
    from twinsim.hal.sim.operator import SimOperator


def true_landmarks_of(patient: Patient) -> Callable[[str], dict[str, np.ndarray]]:
    memo: dict[str, dict[str, np.ndarray]] = {}

    def landmarks(level: str) -> dict[str, np.ndarray]:
        if level not in memo:
            memo[level] = _cached(patient, level)
        return memo[level]

    return landmarks


def _cached(patient: Patient, level: str) -> dict[str, np.ndarray]:
    from twinsim.evaluation.simulated_clicks import true_landmarks_mm
    from twinsim.recon.fit import default_model_name
    from twinsim.shape.model import load_model

    truth = patient.vertebra(level)
    model_name = default_model_name(level)
    model = load_model(model_name)
    h = hashlib.sha256(np.ascontiguousarray(truth.vertices_mm, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(model.mean_mm, dtype=np.float64).tobytes())
    path = cache_home() / "landmarks" / f"{patient.name}_{level}_{h.hexdigest()[:16]}_100.json"
    if path.exists():
        try:
            return {k: np.asarray(v, dtype=np.float64) for k, v in json.loads(path.read_text())["landmarks_mm"].items()}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt
    marks = true_landmarks_mm(model, truth, iterations=100)  # within 0.04 mm of 300 iterations, at a fifth of the time
    write_json(path, {"patient": patient.name, "level": level, "model": model_name,
                      "landmarks_mm": {k: np.asarray(v).tolist() for k, v in marks.items()}})
    return marks


class ClickModel:
    """The simulated clinician's clicks for the operator: each landmark as the clinician sees it, off by ``sigma_mm``.

    Keeps the gross mistakes it made (realistic clinician), for evaluation."""

    def __init__(self, patient: Patient, clinician: Clinician | None = None) -> None:
        self.patient = patient
        self.clinician = clinician or Clinician()
        self.mistakes: list[dict[str, Any] | None] = []

    def __call__(self, geometries: Sequence[ProjectionGeometry], truth_mm: dict[str, np.ndarray], sigma_mm: float, seed: int,
                 names: Sequence[str], level: str) -> list[dict[str, np.ndarray]]:
        bone = self.patient.vertebra(level) if self.clinician.kind == "realistic" else None
        offset = neighbour_offset_mm(self.patient.vertebrae, level) if bone is not None else None
        clicks, mistake = self.clinician.mark(geometries, truth_mm, sigma_mm, seed, names, bone, offset)
        self.mistakes.append(mistake)
        return clicks.views


def equip(operator: SimOperator, carm: SimCArm, patient: Patient, clinician: Clinician | None = None) -> None:
    """Give a simulated operator what the simulated clinician reads: true geometries, anatomy, the click model."""
    operator.true_geometry_of = carm.true_geometry
    operator.landmarks_of_level = true_landmarks_of(patient)
    operator.click = ClickModel(patient, clinician)
