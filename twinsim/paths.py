"""Where twinsim keeps data it installs and results it caches (never inside the repository)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_home() -> Path:
    """Installed data (the example patient); ``TWINSIM_DATA`` overrides."""
    env = os.environ.get("TWINSIM_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "twinsim"


def cache_home() -> Path:
    """Derived results keyed by input content (meshes, URDFs); ``TWINSIM_CACHE`` overrides."""
    env = os.environ.get("TWINSIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twinsim"


BUNDLED = ("assets", "hardware", "scenarios")


def bundled(name: str) -> Path:
    """One of the folders that ship with twinsim (``assets``, ``hardware``, ``scenarios``).

    In an installed wheel they are package data under ``twinsim/_data/`` (mapped there at build
    time); in a source checkout they sit beside the package, at the repository's top level.
    """
    if name not in BUNDLED:
        raise ValueError(f"no bundled folder {name!r}; there are {', '.join(BUNDLED)}")
    packaged = resources.files("twinsim") / "_data" / name
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"twinsim's {name}/ folder is missing (looked in {packaged} and {source}): reinstall twinsim")


def shared_data() -> Path | None:
    """Raw training data for the shape models, from ``TWINSIM_SHARED_DATA`` (None when unset)."""
    env = os.environ.get("TWINSIM_SHARED_DATA")
    return Path(env) if env else None
