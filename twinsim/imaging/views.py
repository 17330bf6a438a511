"""C-arm views: named ones (AP, LAT, obliques) and a seeded sampler of random view pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from twinsim.imaging.carm_geometry import PatientAxes, carm_pose


@dataclass(frozen=True)
class View:
    name: str
    lao_deg: float  # rotation about the patient's long axis; RAO is negative
    cranial_deg: float  # caudal is negative

    def beam_angle_to_deg(self, other: View) -> float:
        """Angle between the two beam directions (same convention as carm_pose)."""
        return float(np.degrees(np.arccos(np.clip(_beam(self) @ _beam(other), -1.0, 1.0))))


def _beam(v: View) -> np.ndarray:
    """Beam direction in patient axes (left, posterior, superior), from the one C-arm convention."""
    axes = PatientAxes(left=np.array([1.0, 0, 0]), posterior=np.array([0, 1.0, 0]), superior=np.array([0, 0, 1.0]))
    return carm_pose(np.zeros(3), axes, v.lao_deg, v.cranial_deg)[:3, 2]


NAMED_VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        View("AP", 0.0, 0.0),
        View("LAT", 90.0, 0.0),  # detector on the patient's left
        View("RLAT", -90.0, 0.0),
        View("LAO30", 30.0, 0.0),
        View("RAO30", -30.0, 0.0),
        View("LAO45", 45.0, 0.0),
        View("RAO45", -45.0, 0.0),
        View("CRAN20", 0.0, 20.0),
        View("CAUD20", 0.0, -20.0),
    )
}

_ANGLES = re.compile(r"^(LAO|RAO)(-?\d+(?:\.\d+)?)(?:(CRAN|CAUD)(\d+(?:\.\d+)?))?$", re.IGNORECASE)


def parse_view(spec: str) -> View:
    """``AP``, ``LAT``, ..., or ``LAO25``, ``RAO40CAUD10``, or ``lao,cranial`` in degrees."""
    s = spec.strip()
    if s.upper() in NAMED_VIEWS:
        return NAMED_VIEWS[s.upper()]
    m = _ANGLES.match(s)
    if m:
        lao = float(m.group(2)) * (1 if m.group(1).upper() == "LAO" else -1)
        cran = float(m.group(4) or 0.0) * (1 if (m.group(3) or "CRAN").upper() == "CRAN" else -1)
        return View(s.upper(), lao, cran)
    parts = s.split(",")
    if len(parts) == 2:
        try:
            lao, cran = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            return View(f"LAO{lao:g}_CRAN{cran:g}", lao, cran)
    raise ValueError(f"unknown view {spec!r}: use one of {', '.join(NAMED_VIEWS)}, LAO<deg>/RAO<deg>[CRAN<deg>/CAUD<deg>], or 'lao,cranial'")


def sample_view_pairs(n: int, seed: int = 0, lao_range_deg: tuple[float, float] = (-90.0, 90.0),
                      cranial_range_deg: tuple[float, float] = (-20.0, 20.0), min_separation_deg: float = 30.0,
                      max_tries: int = 10_000) -> list[tuple[View, View]]:
    """``n`` random view pairs, each pair at least ``min_separation_deg`` apart; the same seed gives the same pairs."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[View, View]] = []
    tries = 0
    while len(pairs) < n:
        tries += 1
        if tries > max_tries:
            raise ValueError(f"could not find {n} view pairs {min_separation_deg} deg apart in the given ranges")
        a, b = (View(f"rand{seed}-{len(pairs)}{s}", float(rng.uniform(*lao_range_deg)), float(rng.uniform(*cranial_range_deg)))
                for s in "ab")
        if a.beam_angle_to_deg(b) >= min_separation_deg:
            pairs.append((a, b))
    return pairs
