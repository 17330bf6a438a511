"""What several commands share: the one list syntax, patient options, range checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from twinsim.errors import UsageError


def comma_list(text: str | None, option: str, command: str, count: int | None = None) -> list[str]:
    """``a,b,c`` as a list of non-empty words; ``count`` demands exactly that many."""
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    if count is not None and len(items) != count:
        raise UsageError(f"twinsim {command}: {option} takes exactly {count} comma-separated values, got {items}")
    return items


def comma_floats(text: str, option: str, command: str, minimum: float | None = None) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in comma_list(text, option, command))
    except ValueError:
        raise UsageError(f"twinsim {command}: {option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"twinsim {command}: {option} needs at least one number, got {text!r}")
    if minimum is not None and min(values) < minimum:
        raise UsageError(f"twinsim {command}: {option} needs values >= {minimum:g}, got {text!r}")
    return values


def at_least(value: float, minimum: float, option: str, command: str, strict: bool = False) -> float:
    if (value <= minimum) if strict else (value < minimum):
        raise UsageError(f"twinsim {command}: {option} must be {'>' if strict else '>='} {minimum:g} (got {value:g})")
    return value


def add_patient_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", help="CT NIfTI in HU (default: the example patient)")
    p.add_argument("--labels", help="label map NIfTI on the CT's grid")
    p.add_argument("--label-table", help="CSV (structure,id) or JSON of label ids (default: TotalSegmentator 'total')")


def patient_files(args: argparse.Namespace, command: str) -> tuple[Path, Path, str | None, str | None]:
    """CT, label map, label table and name: ``--ct``/``--labels``, or the example patient."""
    if args.ct or args.labels:
        if not (args.ct and args.labels):
            raise UsageError(f"twinsim {command}: give both --ct and --labels (or neither for the example patient)")
        return Path(args.ct), Path(args.labels), args.label_table, None
    from twinsim.anatomy.example import example_patient

    ex = example_patient()
    return ex.ct, ex.labels, ex.label_table, ex.name
