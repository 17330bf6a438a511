"""Where twinsim keeps data it installs and results it caches (never inside the repository)."""

from __future__ import annotations

import os
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
