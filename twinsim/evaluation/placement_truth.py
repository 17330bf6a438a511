"""Each placed needle guide against the true anatomy, and confirmation X-rays. **Evaluation code only.**

The needle goes down the guide's *true* bore (the guide as mounted on the arm as built, where
the room has it) to the planned depth: ``insertion_mm`` from the guide's tip. Against the plan
(in ``ref``, mapped through the reference marker's true pose):

- tip error: the needle's tip to the planned target;
- axis error: the bore's direction to the planned axis;

and in the true bone (the CT label surface, through the planner's own safety rules, see
:mod:`plan_truth`): a cannula of the plan's diameter along that line from the skin to the tip,
breach yes/no, clearance and tip in the body. These figures include everything in the chain:
calibration, tracking, the C-arm calibration, the reconstruction, the plan, the robot.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twinsim import frames
from twinsim.evaluation.plan_truth import TrueVertebra
from twinsim.hal.interfaces import CArmView
from twinsim.planning.picture import with_steel
from twinsim.recon.fit import default_model_name
from twinsim.report import write_figure
from twinsim.robot import panda
from twinsim.shape.model import load_model
from twinsim.sim.hand_held import measured_pose_m, tool
from twinsim.tracking.tools import REFERENCE

if TYPE_CHECKING:
    from twinsim.procedure.rehearsal import GuidePlacement, RehearsalRecord


def true_T_world_ref_mm(vega: Any) -> np.ndarray:
    """The reference marker's frame as an error-free tracker would report it."""
    return frames.scale_translation(measured_pose_m(tool(vega, REFERENCE)), 1000.0)


class SimVerifier:
    """Scores a rehearsal on a simulated rig (``dev.room``, ``dev.tracker.vega``)."""

    def __init__(self, dev: Any, level: str) -> None:
        self.dev, self.level = dev, level
        self.room, self.vega = dev.room, dev.tracker.vega
        self._truth: TrueVertebra | None = None
        self.needles_ct: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def truth(self, settings: Any) -> TrueVertebra:
        if self._truth is None:
            self._truth = TrueVertebra(self.room.patient.vertebra(self.level), load_model(default_model_name(self.level)),
                                       settings, landmarks=self.dev.operator.landmarks_of_level(self.level))
        return self._truth

    def T_ct_ref_mm(self) -> np.ndarray:
        return frames.invert(frames.scale_translation(self.room.T_world_ct, 1000.0)) @ true_T_world_ref_mm(self.vega)

    def guide(self, record: RehearsalRecord, placed: GuidePlacement) -> dict[str, Any]:
        T_ref_world = frames.invert(true_T_world_ref_mm(self.vega))
        T = T_ref_world @ frames.scale_translation(self.room.link_pose("operation", panda.TOOL_TIP_LINK), 1000.0)
        tip, axis = T[:3, 3], T[:3, 2]
        needle_tip = tip + axis * placed.dock.insertion_mm
        planned_axis = (placed.planned_target_mm - placed.planned_entry_mm) / np.linalg.norm(placed.planned_target_mm - placed.planned_entry_mm)
        # The needle's line in the bone: from the planned entry's foot on the true line to the true tip.
        foot = tip + axis * float((placed.planned_entry_mm - tip) @ axis)
        T_ct_ref = self.T_ct_ref_mm()
        line_ct = (frames.transform_points(T_ct_ref, foot), frames.transform_points(T_ct_ref, needle_tip))
        skin_ct = frames.transform_points(T_ct_ref, tip)
        self.needles_ct[placed.side] = (skin_ct, line_ct[1])
        truth = self.truth(record.settings.plan)
        scored = truth.score({placed.side: line_ct})[placed.side]
        planned = truth.score({placed.side: (frames.transform_points(T_ct_ref, placed.planned_entry_mm),
                                             frames.transform_points(T_ct_ref, placed.planned_target_mm))})[placed.side]
        return {"tip_error_mm": float(np.linalg.norm(needle_tip - placed.planned_target_mm)),
                "axis_error_deg": frames.angle_between_deg(axis, planned_axis),
                "lateral_offset_at_target_mm": float(np.linalg.norm(np.cross(placed.planned_target_mm - tip, axis))),
                "breach": scored["breach"], "breach_depth_mm": scored["breach_depth_mm"], "clearance_mm": scored["clearance_mm"],
                "tip_in_body": scored["tip_in_body"], "safe_in_truth": scored["safe_in_truth"],
                "plan_safe_in_truth": planned["safe_in_truth"], "plan_clearance_in_truth_mm": planned["clearance_mm"]}

    def confirm(self, record: RehearsalRecord, out: Path) -> dict[str, Any]:
        """Two X-rays at the rehearsal's views with the needles drawn in as steel cannulas (true geometry)."""
        import matplotlib.pyplot as plt

        carm = self.dev.carm
        radius = 0.5 * record.settings.plan.cannula_diameter_mm
        fig, axes = plt.subplots(1, len(record.settings.views), figsize=(5 * len(record.settings.views), 5.2))
        for ax, v in zip(np.atleast_1d(axes), record.settings.views, strict=True):
            carm.move_to(CArmView(f"confirm {v.name}", v.lao_deg, v.cranial_deg))
            acq = carm.acquire()
            true = type(acq)(acq.image, carm.true_geometry(acq), acq.window, acq.view, acq.meta)
            ax.imshow(with_steel(true, list(self.needles_ct.values()), radius), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"confirmation {v.name}: {len(self.needles_ct)} cannulas")
            ax.axis("off")
        carm.park()  # rolled away again after the confirmation shots
        path = write_figure(fig, out / "confirmation_xrays.png")
        return {"outputs": [str(path)], "confirmation_views": [v.name for v in record.settings.views]}
