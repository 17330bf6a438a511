"""The simulated C-arm behind the HAL ``CArm``: turns in the room (refusing a pose that collides) and exposes DRRs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from twinsim import frames
from twinsim.hal.errors import MotionAborted
from twinsim.hal.interfaces import CArmView
from twinsim.imaging.acquisition import Acquisition
from twinsim.imaging.drr import DetectorModel, DRRRenderer
from twinsim.imaging.projection import ProjectionGeometry
from twinsim.imaging.views import View
from twinsim.sim.carm_imaging import acquire, carm_collisions
from twinsim.sim.world import OperatingRoom, scene_patient_files

SOURCE_FRAME = "carm_source"  # the C-arm's own focal spot: all a C-arm knows of its geometry


REPORTED_META = ("detector",)  # the simulated detector's datasheet model, as a real C-arm reports its settings


class SimCArm:
    def __init__(self, room: OperatingRoom, size_px: int = 256, n_samples: int = 256, detector: DetectorModel | None = None,
                 seed: int = 0, name: str = "carm") -> None:
        self.room, self.size_px, self.n_samples, self.name = room, size_px, n_samples, name
        self.detector = detector or DetectorModel.realistic()
        self.seed = seed
        self.view: CArmView | None = None
        self.parked = False
        self._renderer: DRRRenderer | None = None
        self._shots = 0
        self.phantom_world_m: np.ndarray | None = None  # steel beads in the beam (a calibration phantom), world metres
        self.bead_radius_mm = 1.0
        self.patient_in_beam = True  # False: the table slid out of the beam (the C-arm calibrated before the patient)
        self._truth: dict[str, ProjectionGeometry] = {}  # exposure id -> the true geometry it was rendered with, in ct
        # A damaged export (scripted scenarios): exposure number -> "truncated", "wrong_size" or "blank". That
        # exposure is delivered as a file and read back as the lab's folder C-arm reads its files.
        self.damaged_exports: dict[int, str] = {}

    def park(self) -> None:
        self.room.park_carm(True)
        self.parked = True

    def move_to(self, view: CArmView) -> None:
        previous = (self.view.lao_deg, self.view.cranial_deg) if self.view else (self.room.config.carm.lao_deg,
                                                                                   self.room.config.carm.cranial_deg)
        self.room.set_carm_angles(view.lao_deg, view.cranial_deg)  # also rolls it back from where it was parked
        self.parked = False
        hits = carm_collisions(self.room)
        if hits:
            self.room.set_carm_angles(*previous)
            raise MotionAborted(self.name, f"the C-arm cannot turn to {view.name}: it would touch "
                                           + ", ".join(f"{h.b} ({-h.distance_m * 1000:.0f} mm)" for h in hits))
        self.view = view

    def acquire(self) -> Acquisition:
        if self.parked:
            raise MotionAborted(self.name, "the C-arm is parked away from the table: turn it to a view first")
        if self.view is None:
            self.move_to(CArmView("current", self.room.config.carm.lao_deg, self.room.config.carm.cranial_deg))
        if self._renderer is None:
            from twinsim.anatomy.ct import load_ct

            ct_path, labels_path, table_path, _ = scene_patient_files(self.room.config)
            self._renderer = DRRRenderer(load_ct(ct_path, labels_path, table_path), n_samples=self.n_samples)
        v = self.view
        beads_ct_mm = None
        if self.phantom_world_m is not None:
            beads_ct_mm = frames.transform_points(frames.invert(self.room.T_world_ct), self.phantom_world_m) * 1000.0
        acq, _ = acquire(self.room, self._renderer if self.patient_in_beam else None, View(v.name, v.lao_deg, v.cranial_deg),
                         (self.size_px, self.size_px), self.detector, seed=self.seed + self._shots, beads_ct_mm=beads_ct_mm,
                         bead_radius_mm=self.bead_radius_mm)
        self._shots += 1
        if (damage := self.damaged_exports.pop(self._shots - 1, None)) is not None:
            _deliver_damaged(acq.image, damage, self.name, v.name)
        # Rendered with the room's true geometry, reported as a real C-arm reports it: the datasheet's detector
        # and source-detector distance in its own source frame. Where the source is, only the tracker can say.
        g = acq.geometry
        exposure = f"{self.name}-{id(self):x}-{self._shots - 1}"
        self._truth[exposure] = g
        own = ProjectionGeometry(self.room.config.carm.geometry.sdd_mm, g.width_px, g.height_px, g.pixel_spacing_mm, np.eye(4),
                                 frame=SOURCE_FRAME)
        # What a real C-arm's image carries, and nothing else: an allow-list, so a key added to the simulation's
        # metadata (its true geometry, the noise seed, what the C-arm touched) never reaches the twin.
        meta = {k: acq.meta[k] for k in REPORTED_META if k in acq.meta}
        return replace(acq, geometry=own, meta={**meta, "source": "twinsim simulated C-arm", "exposure": exposure})

    def true_geometry(self, acq: Acquisition) -> ProjectionGeometry:
        """The geometry an image of this C-arm was truly rendered with, in ``ct`` (the simulated clinician's eyes)."""
        g = self._truth.get(str(acq.meta.get("exposure")))
        if g is None:
            raise MotionAborted(self.name, "this image was not taken by this simulated C-arm")
        return g

    def close(self) -> None:
        self._renderer = None
        self._truth.clear()


def _deliver_damaged(image: np.ndarray, damage: str, device: str, view: str) -> None:
    """Write the exposure as the C-arm's export would, damage it, and read it back: the reader refuses it."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from twinsim.hal.exposure_file import read_exposure

    data = np.round(np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16)
    if damage == "wrong_size":
        data = data[: data.shape[0] * 3 // 4]
    elif damage == "blank":
        data = np.full_like(data, 4096)
    elif damage != "truncated":
        raise ValueError(f"unknown export damage {damage!r}: truncated, wrong_size or blank")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"exposure_{view.replace(' ', '')}.png"
        Image.fromarray(data).save(path, format="PNG")
        if damage == "truncated":  # the copy stopped halfway
            raw = path.read_bytes()
            path.write_bytes(raw[: len(raw) // 2])
        read_exposure(path, image.shape[1], image.shape[0], device, view)
    raise AssertionError("a damaged export was read as a good one")
