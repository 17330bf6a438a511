"""The procedure's tolerances, read from the scene file's ``procedure`` section (one default for every patient)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcedureTolerances:
    """The procedure's tolerances (the scene's ``procedure`` section), one default for every patient of the suite.

    ``calibration_check_mm``: the tracked guide tip against the joints' prediction before the calibration
    is trusted; ``skin_touches``: pointer touches on the back for the patient envelope; ``dock_standoff_mm``
    and ``approach_mm``: where the guide docks outside the envelope and the approach behind it;
    ``robot_clearance_mm``/``guide_to_patient_mm``: what every checked motion keeps; ``sight_rim_mm`` and
    ``max_blind_frames``: the twin's margin on the guide marker's line of sight; ``envelope_continuation_mm``:
    how far the twin carries the patient on past the touched patch at each end (the body does not stop there);
    ``envelope_flank_mm``: how far it carries the patient out past each side of the patch, at the side's height
    (the operator touches the back, not the flanks, and a heavy body's flank bulges out below the last touch);
    ``envelope_padding_mm``: how much the twin grows the touched envelope for collisions (the hull of the touches
    runs under a convex back between them); ``retreat_mm``: how far a placed guide backs out along its axis past
    the approach pose before the next transit (0: to the approach pose only).
    """

    calibration_check_mm: float = 3.0
    skin_touches: int = 40
    dock_standoff_mm: float = 15.0
    approach_mm: tuple[float, ...] = (30.0, 15.0, 5.0)
    robot_clearance_mm: float = 15.0
    guide_to_patient_mm: float = 4.0
    sight_rim_mm: float = 6.0
    max_blind_frames: int = 2
    envelope_continuation_mm: float = 300.0
    envelope_flank_mm: float = 100.0
    envelope_padding_mm: float = 5.0
    retreat_mm: float = 100.0

    @classmethod
    def from_scene(cls, section: dict) -> ProcedureTolerances:
        """From a scene's validated ``procedure`` section (missing keys take the defaults above)."""
        values = dict(section)
        if "approach_mm" in values:
            values["approach_mm"] = tuple(values["approach_mm"])
        return cls(**values)
