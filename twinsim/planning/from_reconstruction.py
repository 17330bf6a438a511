"""Planning input from a reconstruction: the fitted surface and the model's landmarks on it.

Reads a ``twinsim-reconstruction/1`` file (pose and shape coefficients of a named shape model
in the X-rays' frame) and the shape model; nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.errors import TwinsimError
from twinsim.recon import RECONSTRUCTION_FORMAT
from twinsim.report import read_json
from twinsim.shape.model import ShapeModel, load_model


class ReconstructionFileError(TwinsimError, ValueError):
    """A reconstruction file is missing, malformed or does not fit its shape model."""


@dataclass
class FittedVertebra:
    level: str
    frame: str
    vertices_mm: np.ndarray
    faces: np.ndarray
    landmarks_mm: dict[str, np.ndarray]
    model_name: str
    image_paths: list[Path]

    @classmethod
    def from_model(cls, model: ShapeModel, T_frame_model: np.ndarray, coeffs_sd: np.ndarray, level: str = "", frame: str = "",
                   image_paths: list[Path] | None = None) -> FittedVertebra:
        v = frames.transform_points(T_frame_model, model.instance(coeffs_sd))
        return cls(level, frame, v, model.faces.copy(), model.annotation_points(v), model.name, image_paths or [])


def load_reconstruction(path: str | Path, model: ShapeModel | None = None) -> FittedVertebra:
    path = Path(path)
    d: Any = read_json(path, ReconstructionFileError, "reconstruction file")
    if not isinstance(d, dict) or d.get("format") != RECONSTRUCTION_FORMAT:
        raise ReconstructionFileError(f"{path} is not a {RECONSTRUCTION_FORMAT!r} file (written by `twinsim reconstruct`)")
    for key in ("model", "frame", "T_frame_model_mm", "coeffs_sd"):
        if key not in d:
            raise ReconstructionFileError(f"reconstruction file {path}: missing '{key}'")
    try:
        T = frames.as_transform(np.asarray(d["T_frame_model_mm"], dtype=np.float64), "T_frame_model_mm")
        b = np.asarray(d["coeffs_sd"], dtype=np.float64).ravel()
    except (frames.FrameError, TypeError, ValueError) as exc:
        raise ReconstructionFileError(f"reconstruction file {path}: {exc}") from exc
    if not np.isfinite(b).all():
        raise ReconstructionFileError(f"reconstruction file {path}: shape coefficients are not finite")
    model = model or load_model(str(d["model"]))
    if len(b) > model.n_modes:
        raise ReconstructionFileError(f"reconstruction file {path} has {len(b)} shape coefficients; model {model.name} has {model.n_modes}")
    images = [_resolve(p, path.parent) for p in (d.get("image_paths") or d.get("images") or [])]
    return FittedVertebra.from_model(model, T, b, str(d.get("level", "")), str(d["frame"]), images)


def _resolve(p: str, base: Path) -> Path:
    """An image named in the file: as written, else beside the reconstruction file."""
    q = Path(p)
    return q if q.is_file() or q.is_absolute() else base / q.name
