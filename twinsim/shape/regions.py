"""Which shape model a vertebral level takes (seed 000's regions: T1-4, T5-8, T9-12, L1-5).

L1, the level this project is built around, keeps a model of its own; every other level takes
the model of its region.
"""

from __future__ import annotations

from twinsim.errors import TwinsimError

MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    "L1": ("L1",),
    "L1-5": ("L1", "L2", "L3", "L4", "L5"),
    "T9-12": ("T9", "T10", "T11", "T12"),
    "T5-8": ("T5", "T6", "T7", "T8"),
    "T1-4": ("T1", "T2", "T3", "T4"),
}
MODEL_NAMES = tuple(MODEL_LEVELS)
# A thoracic model's template: a middle level of the region from the ctacardio surfaces (the VerSe
# template ref_20 is an L1), re-meshed to the template's resolution.
THORACIC_TEMPLATE_LEVEL = {"T9-12": "T10", "T5-8": "T6", "T1-4": "T2"}


class UnknownLevelError(TwinsimError, ValueError):
    """A level no shape model covers (cervical, sacral, or a typo)."""


def model_for_level(level: str) -> str:
    """The committed model for a level: ``L1`` for L1, else its region's (``T11`` -> ``T9-12``)."""
    lvl = level.strip().upper()
    if lvl == "L1":
        return "L1"
    for name, levels in MODEL_LEVELS.items():
        if name != "L1" and lvl in levels:
            return name
    raise UnknownLevelError(f"no shape model covers level {level!r}: models cover T1-T12 and L1-L5")
