"""The truth layer of the web view, for teaching in simulation. **Evaluation code only.**

What the room really is, in the patient reference frame ``ref`` as an error-free tracker would give it: the
target vertebra's surface from the CT's labels, and the needle guide's true tip pose (the guide as mounted on
the arm as built). The view shows it marked as truth, off by default, beside what the twin knows; a lab rig
has no room, so it has no truth layer (:func:`teaching_truth` returns None there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from twinsim import frames
from twinsim.evaluation.placement_truth import true_T_world_ref_mm
from twinsim.robot import panda


class TeachingTruth:
    def __init__(self, dev: Any, level: str) -> None:
        """``dev``: an open simulated rig (its room and its tracker's simulated Vega)."""
        self.room, self.vega, self.level = dev.room, dev.tracker.vega, level
        self._bone_ct = self.room.patient.vertebra(level)

    def layer(self) -> dict[str, np.ndarray]:
        """The truth now, in ``ref`` (mm): ``vertebra_vertices_mm``, ``vertebra_faces``, ``T_ref_guide_tip_mm``."""
        T_ref_world = frames.invert(true_T_world_ref_mm(self.vega))
        T_ref_ct = T_ref_world @ frames.scale_translation(self.room.T_world_ct, 1000.0)
        tip = T_ref_world @ frames.scale_translation(self.room.link_pose("operation", panda.TOOL_TIP_LINK), 1000.0)
        return {"vertebra_vertices_mm": frames.transform_points(T_ref_ct, self._bone_ct.vertices_mm),
                "vertebra_faces": np.asarray(self._bone_ct.faces), "T_ref_guide_tip_mm": tip, "level": np.array(self.level)}


def teaching_truth(dev: Any, level: str) -> Callable[[], dict[str, np.ndarray]] | None:
    """The truth layer's source for a simulated rig; None on a lab rig (no room, no truth)."""
    if getattr(dev, "room", None) is None:
        return None
    return TeachingTruth(dev, level).layer
