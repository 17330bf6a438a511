"""An exposure as a C-arm delivers it: one DICOM or PNG file, read and checked before anything uses it.

A real C-arm's export can arrive truncated (a copy interrupted), at another size than its
calibration (a different zoom or binning), or blank (no exposure, a dead detector read-out).
Each is refused here with the file's name and what is wrong, instead of a decoder's traceback
or a silent reconstruction on a meaningless image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twinsim.hal.errors import HalError

MIN_CONTRAST = 1e-3  # of the image's range over its mean: below this no structure reaches the detector


def read_image(path: Path) -> np.ndarray:
    """A detector image as float32 (DICOM through pydicom, PNG through Pillow)."""
    if path.suffix.lower() == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        img = ds.pixel_array.astype(np.float32)
        return img * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("F"), dtype=np.float32)


def read_exposure(path: Path, width_px: int, height_px: int, device: str, view: str) -> np.ndarray:
    """The image in ``path`` normalised to [0, 1], bright = attenuating; a clear ``HalError`` when it is unusable."""
    try:
        image = read_image(path)
    except Exception as exc:  # noqa: BLE001 (Pillow and pydicom raise many types for a damaged file)
        raise HalError(device, f"the X-ray file {path.name} cannot be read ({type(exc).__name__}: {exc}): "
                               "it is damaged or incomplete; expose again or export it again") from None
    if image.ndim != 2:
        raise HalError(device, f"the X-ray file {path.name} is not a single-channel image (shape {image.shape})")
    if image.shape != (height_px, width_px):
        raise HalError(device, f"the X-ray file {path.name} is {image.shape[1]}x{image.shape[0]} px; the calibration of "
                               f"{view} is {width_px}x{height_px}: another zoom or binning than calibrated")
    finite = np.isfinite(image)
    if not finite.all():
        raise HalError(device, f"the X-ray file {path.name} has {int((~finite).sum())} non-finite pixels")
    lo, hi = float(image.min()), float(image.max())
    if hi - lo <= MIN_CONTRAST * max(abs(float(image.mean())), 1.0):
        raise HalError(device, f"the X-ray file {path.name} is blank (all pixels {lo:g}): no exposure reached the detector")
    return (image - lo) / (hi - lo)
