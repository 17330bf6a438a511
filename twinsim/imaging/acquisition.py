"""X-ray acquisitions on disk: a 16-bit PNG and a JSON sidecar with the full geometry.

The same files carry simulated DRRs and images from a real, calibrated C-arm, so both enter
the reconstruction the same way. A sidecar holds the intrinsics, the source pose in a named
frame (mm) and the 3x4 projection matrix; on load they must agree with each other and with
the image size, or the file is refused with a message that says what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from twinsim.errors import TwinsimError
from twinsim.imaging.projection import GeometryError, ProjectionGeometry
from twinsim.report import atomic_output

FORMAT = "twinsim-xray/1"
UINT16_MAX = 65535
# A stored P may differ from K [R|t] by rounding in a hand-written file; beyond this it is wrong.
P_REL_TOLERANCE = 1e-6
REQUIRED_KEYS = ("format", "image", "width_px", "height_px", "pixel_spacing_mm", "sdd_mm", "intrinsics",
                 "frame", "T_frame_source_mm", "projection_matrix")


class AcquisitionError(TwinsimError, ValueError):
    """An acquisition file or its sidecar is missing, incomplete or inconsistent."""


@dataclass
class Acquisition:
    image: np.ndarray  # (H, W) float32 in [0, 1]; bright = more attenuation
    geometry: ProjectionGeometry
    window: tuple[float, float] = (0.0, 1.0)  # log-attenuation mapped to 0 and 1
    view: dict[str, Any] = field(default_factory=dict)  # name, lao_deg, cranial_deg (informative)
    meta: dict[str, Any] = field(default_factory=dict)  # detector model, seed, source of the image
    path: Path | None = None  # the image file it was read from, if any
    sidecar_image: str | None = None  # the image name its sidecar was written for

    @property
    def log_attenuation(self) -> np.ndarray:
        lo, hi = self.window
        return lo + self.image.astype(np.float64) * (hi - lo)

    def sidecar(self, image_name: str) -> dict[str, Any]:
        g = self.geometry
        return {
            "format": FORMAT,
            "image": image_name,
            "width_px": g.width_px,
            "height_px": g.height_px,
            "pixel_spacing_mm": list(g.pixel_spacing_mm),
            "sdd_mm": g.sdd_mm,
            "principal_offset_mm": list(g.principal_offset_mm),
            "intrinsics": g.K.tolist(),
            "frame": g.frame,
            "T_frame_source_mm": g.T_frame_source_mm.tolist(),
            "projection_matrix": g.P.tolist(),
            "pixel_convention": "pixel (row i, col j) centre at (u, v) = (j + 0.5, i + 0.5)",
            "intensity": {"kind": "log_attenuation", "window": list(self.window), "bright": "attenuating"},
            "view": self.view,
            "meta": self.meta,
        }

    def save(self, folder: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.png`` (16-bit) and ``stem.json``; each appears whole or not at all."""
        folder = Path(folder)
        png, js = folder / f"{stem}.png", folder / f"{stem}.json"
        data = np.round(np.clip(self.image, 0.0, 1.0) * UINT16_MAX).astype(np.uint16)
        with atomic_output(png) as tmp:
            Image.fromarray(data).save(tmp, format="PNG")
        with atomic_output(js) as tmp:
            tmp.write_text(json.dumps(self.sidecar(png.name), indent=1) + "\n")
        return png, js


def _matrix(d: dict[str, Any], key: str, shape: tuple[int, ...], where: Path) -> np.ndarray:
    try:
        m = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AcquisitionError(f"sidecar {where}: '{key}' is not numeric") from exc
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise AcquisitionError(f"sidecar {where}: '{key}' must be a finite {'x'.join(map(str, shape))} array, got shape {m.shape}")
    return m


def load_acquisition(image_path: str | Path, sidecar_path: str | Path | None = None) -> Acquisition:
    """Read an image and its sidecar (``<stem>.json`` beside it unless given)."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise AcquisitionError(f"X-ray image not found: {image_path}")
    sidecar_path = Path(sidecar_path) if sidecar_path else image_path.with_suffix(".json")
    if not sidecar_path.is_file():
        raise AcquisitionError(
            f"geometry sidecar not found for {image_path.name}: expected {sidecar_path}. "
            "Every X-ray needs its projection geometry (see `twinsim xray` output for the format)."
        )
    try:
        d = json.loads(sidecar_path.read_text())
    except json.JSONDecodeError as exc:
        raise AcquisitionError(f"sidecar {sidecar_path} is not valid JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise AcquisitionError(f"sidecar {sidecar_path} must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise AcquisitionError(f"sidecar {sidecar_path} is incomplete: missing {', '.join(missing)}")
    if d["format"] != FORMAT:
        raise AcquisitionError(f"sidecar {sidecar_path}: format {d['format']!r} is not {FORMAT!r}")

    try:
        with Image.open(image_path) as im:
            raw = np.asarray(im)
    except OSError as exc:
        raise AcquisitionError(f"X-ray image {image_path} cannot be read: {exc}") from exc
    if raw.ndim != 2:
        raise AcquisitionError(f"X-ray image {image_path} must be single-channel, got shape {raw.shape}")
    h, w = raw.shape
    if (w, h) != (int(d["width_px"]), int(d["height_px"])):
        raise AcquisitionError(
            f"X-ray image {image_path.name} is {w}x{h} px but its sidecar says {d['width_px']}x{d['height_px']}"
        )
    scale = UINT16_MAX if raw.dtype in (np.uint16, np.int32, np.int64) or raw.max() > 255 else 255
    image = (raw.astype(np.float64) / scale).astype(np.float32)

    K = _matrix(d, "intrinsics", (3, 3), sidecar_path)
    T = _matrix(d, "T_frame_source_mm", (4, 4), sidecar_path)
    P = _matrix(d, "projection_matrix", (3, 4), sidecar_path)
    spacing = _matrix(d, "pixel_spacing_mm", (2,), sidecar_path)
    offset = np.asarray(d.get("principal_offset_mm", [0.0, 0.0]), dtype=np.float64)
    try:
        geom = ProjectionGeometry(float(d["sdd_mm"]), w, h, (float(spacing[0]), float(spacing[1])), T,
                                  frame=str(d["frame"]), principal_offset_mm=(float(offset[0]), float(offset[1])))
    except GeometryError as exc:
        raise AcquisitionError(f"sidecar {sidecar_path}: {exc}") from exc
    if not np.allclose(geom.K, K, rtol=P_REL_TOLERANCE, atol=1e-9):
        raise AcquisitionError(
            f"sidecar {sidecar_path} is inconsistent: intrinsics do not follow from sdd_mm, pixel_spacing_mm, "
            f"principal_offset_mm and the image size (expected {np.round(geom.K, 6).tolist()})"
        )
    if np.abs(geom.P - P).max() > P_REL_TOLERANCE * np.abs(P).max():
        raise AcquisitionError(f"sidecar {sidecar_path} is inconsistent: projection_matrix is not intrinsics @ inv(T_frame_source_mm)")
    intensity = d.get("intensity", {})
    window = tuple(intensity.get("window", (0.0, 1.0)))
    return Acquisition(image=image, geometry=geom, window=(float(window[0]), float(window[1])),
                       view=d.get("view", {}), meta=d.get("meta", {}), path=image_path,
                       sidecar_image=str(d["image"]) if d.get("image") is not None else None)
