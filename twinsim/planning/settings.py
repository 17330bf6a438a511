"""Planning settings: cannula size, safety margin and the limits a scenario may set."""

from __future__ import annotations

from dataclasses import dataclass

from twinsim.errors import TwinsimError


class PlanSettingsError(TwinsimError, ValueError):
    """A planning setting is out of range."""


REFINE_STARTS = (1, 9)  # the transferred path alone, or also shifted and tilted each way


@dataclass(frozen=True)
class PlanSettings:
    cannula_diameter_mm: float = 5.0  # seed 000 and Baroud 2005: 5 mm cylinder; an 11G needle is ~3 mm
    margin_mm: float = 0.0  # clearance required beyond the cannula's radius
    dock_mm: float = 5.0  # first millimetres below the entry, where the cannula crosses the oblique posterior cortex
    min_tip_to_cortex_mm: float = 5.0  # target short of the anterior cortex, along the axis
    anterior_fraction: float = 2.0 / 3.0  # the target lies beyond this share of the body's depth (anterior third)
    medial_angle_deg: tuple[float, float] = (0.0, 35.0)  # each axis vs the sagittal plane, in the axial plane
    max_tilt_deg: float = 25.0  # each axis vs the axial plane (cranio-caudal)
    convergence_deg: tuple[float, float] = (5.0, 60.0)  # angle between the two axes in the axial plane
    # The refinement asks this much more clearance in the body than in the pedicle: a tip near the body's cortex
    # is where cement leaks, and where a reconstruction is least sure of the wall.
    body_extra_clearance_mm: float = 2.0
    refine: bool = True
    # The refinement aims this far inside each limit (mm of depth, deg of angle): its optimum sits on a limit's
    # kink, and the optimiser's tolerance would otherwise leave a path a hair outside as often as inside.
    limit_margin: float = 0.5
    max_evaluations: int = 400  # per side and start, of the refinement
    refine_starts: int = 9  # 1: from the transferred path only; 9: also from it shifted and tilted each way
    refine_shift_mm: float = 1.5  # those shifts
    refine_tilt_rad: float = 0.07  # and tilts (~4 deg)

    def __post_init__(self) -> None:
        problems = []
        if not self.cannula_diameter_mm > 0:
            problems.append(f"cannula_diameter_mm must be > 0 (got {self.cannula_diameter_mm})")
        if min(self.margin_mm, self.dock_mm, self.min_tip_to_cortex_mm, self.body_extra_clearance_mm,
               self.limit_margin) < 0:
            problems.append("margin_mm, dock_mm, min_tip_to_cortex_mm, body_extra_clearance_mm and limit_margin "
                            "must be >= 0")
        for name in ("medial_angle_deg", "convergence_deg"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                problems.append(f"{name} must be (min, max) with min < max, got {getattr(self, name)}")
        if self.refine_starts not in REFINE_STARTS:
            problems.append(f"refine_starts must be 1 or 9, got {self.refine_starts}")
        if not (self.refine_shift_mm > 0 and self.refine_tilt_rad > 0):
            problems.append("refine_shift_mm and refine_tilt_rad must be > 0")
        if not 0 <= self.anterior_fraction < 1:
            problems.append(f"anterior_fraction must be in [0, 1), got {self.anterior_fraction}")
        if problems:
            raise PlanSettingsError("planning settings: " + "; ".join(problems))

    @property
    def required_clearance_mm(self) -> float:
        return 0.5 * self.cannula_diameter_mm + self.margin_mm
