"""A C-arm calibration phantom in the simulated room, and the nominal calibration a lab would start from.

The phantom is a radiolucent block (140 x 140 x 120 mm, 20 steel beads: a shallower, smaller one leaves
the source-detector distance trading off against the source's depth) clamped to the patient reference, its bead
centres known in the reference marker's frame (as a phantom measured once on a coordinate
measuring machine is). The nominal ``T_marker_source`` stands in for the C-arm's CAD or a
pointer survey of its housings: the true transform off by a seeded error of that size.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from twinsim import frames
from twinsim.hal.sim.carm import SimCArm
from twinsim.sim import hand_held
from twinsim.sim.world import OperatingRoom
from twinsim.tracking.bead_phantom import CArmPhantom
from twinsim.tracking.tools import CARM_MARKER, REFERENCE
from twinsim.tracking.vega_sim import SimulatedVega


def place_phantom(room: OperatingRoom, vega: SimulatedVega, n_beads: int = 20, seed: int = 0, above_iso_mm: float = 90.0,
                  half_extent_mm: tuple[float, float, float] = (70.0, 70.0, 60.0), min_spacing_mm: float = 25.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bead centres in the world, metres; the same in the reference marker's frame, mm)."""
    rng = np.random.default_rng(seed)
    iso = room.config.carm.isocenter
    centre = (room.target_world_m() if isinstance(iso, str) else np.asarray(iso)) + np.array([0.0, 0.0, above_iso_mm * 1e-3])
    beads: list[np.ndarray] = []
    for _ in range(10000):
        p = rng.uniform(-1, 1, 3) * np.asarray(half_extent_mm)
        if all(np.linalg.norm(p - q) >= min_spacing_mm for q in beads):
            beads.append(p)
        if len(beads) == n_beads:
            break
    world_m = centre + np.array(beads) * 1e-3
    T_world_ref = hand_held.measured_pose_m(hand_held.tool(vega, REFERENCE))  # the beads are surveyed through the marker
    ref_mm = frames.transform_points(frames.invert(T_world_ref), world_m) * 1000.0
    return world_m, ref_mm


def true_T_marker_source_mm(room: OperatingRoom, vega: SimulatedVega) -> np.ndarray:
    """Ground truth (the set-up and evaluation only): the C-arm marker to the focal spot, mm."""
    T_world_marker = hand_held.measured_pose_m(hand_held.tool(vega, CARM_MARKER))
    T_world_source = room.T_world_carm @ room.config.carm.geometry.T_carm_source
    return frames.scale_translation(frames.invert(T_world_marker) @ T_world_source, 1000.0)


def nominal_T_marker_source_mm(room: OperatingRoom, vega: SimulatedVega, seed: int = 0, translation_mm: float = 2.0,
                               rotation_deg: float = 0.5) -> np.ndarray:
    """What a lab knows before calibrating: the truth off by ~``translation_mm`` and ~``rotation_deg``."""
    rng = np.random.default_rng(seed + 17)
    dR = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(rotation_deg)).as_matrix()
    return true_T_marker_source_mm(room, vega) @ frames.make_transform(dR, rng.normal(size=3) / np.sqrt(3) * translation_mm)


NOMINAL_SDD_OFFSET_MM = 8.0  # the datasheet's source-detector distance against this C-arm's (an assumption)


def sim_phantom(room: OperatingRoom, vega: SimulatedVega, carm: SimCArm, seed: int = 0) -> CArmPhantom:
    """The phantom for ``twinsim calibrate carm`` in the simulated room: mounting it puts its beads in the DRRs.

    With the scene's ``carm.calibration_shots: empty_beam`` (the default) the shots see the beads alone, as a
    C-arm calibrated before the patient is in the beam does; ``over_patient`` images them over the anatomy.
    """
    world_m, ref_mm = place_phantom(room, vega, seed=seed)

    empty_beam = room.config.carm.calibration_shots == "empty_beam"

    def mount() -> None:
        carm.phantom_world_m = world_m
        # Before the patient is slid into the beam: the beads keep their place in the reference's frame, and
        # no anatomy lies over them (the geometry of the shots is the same either way).
        carm.patient_in_beam = not empty_beam

    def unmount() -> None:
        carm.phantom_world_m = None
        carm.patient_in_beam = True

    return CArmPhantom(ref_mm, carm.bead_radius_mm, room.config.carm.geometry.sdd_mm + NOMINAL_SDD_OFFSET_MM,
                       nominal_T_marker_source_mm(room, vega, seed=seed), mount, unmount)
