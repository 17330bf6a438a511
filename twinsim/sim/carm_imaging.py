"""The C-arm in the room as an imaging device: its projection geometry in the ct or world frame."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from twinsim import frames
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.beads import STEEL_MU_PER_MM, sphere_chord_mm
from twinsim.imaging.drr import DetectorModel, DRRRenderer, expose
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.imaging.views import View
from twinsim.sim.world import OperatingRoom, PairClearance


def T_world_ct_mm(room: OperatingRoom) -> np.ndarray:
    """``T_world_ct`` with both frames in millimetres (the room's own keeps world in metres)."""
    return frames.scale_translation(room.T_world_ct, 1000.0)


def carm_projection(room: OperatingRoom, size_px: tuple[int, int], frame: str = "ct") -> ProjectionGeometry:
    """Projection geometry of the room's C-arm at its current pose, read out at ``size_px`` (W, H).

    The detector's physical size is fixed; the pixel spacing follows from the read-out size.
    """
    g = room.config.carm.geometry
    T_world_source_mm = frames.scale_translation(room.T_world_carm @ g.T_carm_source, 1000.0)
    geom = ProjectionGeometry(g.sdd_mm, int(size_px[0]), int(size_px[1]), g.pixel_spacing_for(size_px),
                              T_world_source_mm, frame="world")
    if frame == "world":
        return geom
    if frame == "ct":
        return geom.in_frame(frames.invert(T_world_ct_mm(room)), "ct")
    raise ValueError(f"frame must be 'ct' or 'world', got {frame!r}")


def carm_collisions(room: OperatingRoom) -> list[PairClearance]:
    """Pairs the C-arm touches at its current pose (robots, patient, table)."""
    pairs = [("carm", other) for other in ("operation robot", "navigation robot", "patient", "table")]
    return [c for c in (room.clearance(a, b, query_m=0.01) for a, b in pairs) if c.colliding]


def acquire(room: OperatingRoom, renderer: DRRRenderer | None, view: View, size_px: tuple[int, int],
            detector: DetectorModel | None = None, seed: int | None = 0, beads_ct_mm: np.ndarray | None = None,
            bead_radius_mm: float = 1.0) -> tuple[Acquisition, list[PairClearance]]:
    """Turn the C-arm to ``view``, expose, and return the acquisition (geometry in the ct frame).

    ``renderer=None`` exposes the empty beam (no patient in it); ``beads_ct_mm`` puts steel beads
    (a calibration phantom) in the beam: their attenuation adds to the patient's before the
    detector, so a heavier patient leaves them fewer photons and more noise, as on a real panel.
    Also returns what the C-arm would touch in that pose: in the room a real C-arm cannot
    pass through a robot, so callers should report it.
    """
    room.set_carm_angles(view.lao_deg, view.cranial_deg)
    hits = carm_collisions(room)
    geom = carm_projection(room, size_px, "ct")
    detector = detector or DetectorModel()
    L = renderer.line_integrals(geom) if renderer is not None else np.zeros((geom.height_px, geom.width_px))
    if beads_ct_mm is not None:
        L = L + STEEL_MU_PER_MM * sphere_chord_mm(geom, beads_ct_mm, bead_radius_mm)
    image, window = expose(L, geom, detector, seed)
    acq = Acquisition(
        image=image, geometry=geom, window=window,
        view={"name": view.name, "lao_deg": view.lao_deg, "cranial_deg": view.cranial_deg},
        meta={"source": "twinsim DRR (nanodrr)", "geometry": "the DRR's own: ground truth (simulation and evaluation only)",
              "detector": asdict(detector), "seed": seed,
              "carm_collisions": [f"{c.b} ({-c.distance_m * 1000:.1f} mm)" for c in hits]},
    )
    return acq, hits
