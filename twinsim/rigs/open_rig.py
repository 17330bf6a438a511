"""Open the devices a rig file names: the simulated room's, or the lab's real ones.

The only module that knows both worlds. Commands, benches and scenarios hold the :class:`RigDevices`
(on a simulated rig its drivers and room are what evaluation code reads); the procedure receives
only :attr:`RigDevices.devices`, the rig as ports (:mod:`twinsim.hal.ports`), through
:func:`new_rehearsal`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinsim.hal.interfaces import Arm, CArm, Operator, Tracker
from twinsim.hal.ports import callable_port, port, release
from twinsim.hal.rig import LabRig, SimRig
from twinsim.motion.room_model import RoomModel
from twinsim.procedure.devices import Devices
from twinsim.procedure.tolerances import ProcedureTolerances
from twinsim.robot.nominal import NominalPanda
from twinsim.tracking.bead_phantom import CArmPhantom, load_phantom
from twinsim.tracking.fiducials import RegistrationTarget, patient_registration_target
from twinsim.tracking.tools import TRACKED_TOOLS

if TYPE_CHECKING:
    from twinsim.procedure.rehearsal import Rehearsal, RehearsalSettings, Verifier
    from twinsim.sim.world import OperatingRoom
    from twinsim.twin.calibration_set import CalibrationSet


@dataclass
class RigDevices:
    rig: SimRig | LabRig
    arm: Arm
    tracker: Tracker
    carm: CArm
    operator: Operator
    model: NominalPanda  # the twin's nominal kinematics of the operation robot
    registration: RegistrationTarget  # from the patient's planning data
    room_model: RoomModel  # the room's datasheet parts (shapes, sizes) for the twin's collision world
    navigation: Arm | None = None  # the robot holding the tracker camera (its joint readings place it in the twin)
    carm_phantom: CArmPhantom | None = None  # for `twinsim calibrate carm`
    room: OperatingRoom | None = None  # the simulated room (sim rigs only; evaluation code may read it)
    target_level: str = ""  # the level the patient's planning data names
    tolerances: ProcedureTolerances = field(default_factory=ProcedureTolerances)  # the scene's `procedure` section
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _devices: Devices | None = None

    @property
    def devices(self) -> Devices:
        """The rig as the twin's side sees it: every device behind a port, no room, no driver."""
        if self._devices is None:
            phantom = self.carm_phantom
            if phantom is not None:
                phantom = replace(phantom, mount=callable_port(phantom.mount), unmount=callable_port(phantom.unmount))
            self._devices = Devices(
                rig_name=self.rig.name, rig_kind=self.rig.kind, seed=int(getattr(self.rig, "seed", 0)),
                arm=port(self.arm, Arm), tracker=port(self.tracker, Tracker), carm=port(self.carm, CArm),
                operator=port(self.operator, Operator), model=self.model, registration=self.registration,
                room_model=self.room_model, target_level=self.target_level, tolerances=self.tolerances,
                navigation=port(self.navigation, Arm) if self.navigation is not None else None, carm_phantom=phantom)
        return self._devices

    def close(self) -> None:
        if self._devices is not None:
            d = self._devices
            for p in (d.arm, d.tracker, d.carm, d.operator, d.navigation,
                      *((d.carm_phantom.mount, d.carm_phantom.unmount) if d.carm_phantom else ())):
                release(p)
        for f in reversed(self._closers):
            try:
                f()
            except Exception:  # noqa: BLE001 (closing everything matters more than the first failure)
                pass
        self._closers.clear()

    def __enter__(self) -> RigDevices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def room_model(cfg: Any) -> RoomModel:
    """The twin's datasheet model of a scene's room: what things look like, never where they truly stand."""
    from twinsim.sim.carm_body import carm_boxes

    return RoomModel(needle_guide=cfg.needle_guide, tracker_camera=cfg.tracker_camera,
                     carm_boxes_m=[(size, T) for size, T, _ in carm_boxes(cfg.carm)], T_carm_source_m=cfg.carm.geometry.T_carm_source,
                     table_top_height_m=cfg.table.top_height_m, table_width_m=float(cfg.table.top_size_m[1]),
                     table_length_m=float(cfg.table.top_size_m[0]),
                     cart_size_m={name: rc.cart_size_m for name, rc in cfg.robots.items()},
                     base_height_m={name: float(rc.base_xyz_m[2]) for name, rc in cfg.robots.items()})


def open_sim(rig: SimRig, progress: bool | None = None) -> RigDevices:
    from twinsim.evaluation.clinician import equip
    from twinsim.hal.sim.arm import SimArm
    from twinsim.hal.sim.carm import SimCArm
    from twinsim.hal.sim.clock import SimClock
    from twinsim.hal.sim.operator import SimOperator
    from twinsim.hal.sim.phantom import sim_phantom
    from twinsim.hal.sim.tracker import SimTracker
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room

    room = build_operating_room(rig.scene, progress=progress)
    try:
        clock = SimClock()
        vega = room_tracker(room, {"seed": rig.seed})
        arm = SimArm(room, clock)
        target = patient_registration_target(room.patient, room.config.patient.target_level)
        operator = SimOperator(room, vega, target.landmarks_ct_mm, seed=rig.seed)
        model = NominalPanda(room.config.needle_guide)
        carm = SimCArm(room, rig.carm.size_px, rig.carm.samples, seed=rig.seed)
        equip(operator, carm, room.patient)
        navigation = SimArm(room, clock, name="navigation", obstacles=())
        dev = RigDevices(rig, arm, SimTracker(vega, clock), carm, operator, model, target, room_model(room.config),
                         navigation, sim_phantom(room, vega, carm, seed=rig.seed), room, room.config.patient.target_level,
                         tolerances=ProcedureTolerances.from_scene(room.config.procedure))
    except Exception:
        room.close()
        raise
    dev._closers += [room.close, arm.close, navigation.close, model.close]
    return dev


def open_lab(rig: LabRig) -> RigDevices:
    from twinsim.hal.real.folder_carm import FolderCArm
    from twinsim.hal.real.franky_arm import FrankyArm
    from twinsim.hal.real.ndi_tracker import open_ndi_tracker
    from twinsim.hal.real.terminal_operator import TerminalOperator
    from twinsim.sim.scene_config import load_scene_config
    from twinsim.sim.world import load_scene_patient

    cfg = load_scene_config(rig.scene)
    operator = TerminalOperator()
    closers: list[Callable[[], None]] = []
    try:
        op = rig.robots["operation"]
        arm = FrankyArm(op.hostname, "operation", op.realtime)
        closers.append(arm.close)
        t = rig.tracker
        tracker = open_ndi_tracker({"tracker type": t.type, "ip address": t.ip_address, "port": t.port,
                                    "romfiles": [str(t.tools[n]) for n in TRACKED_TOOLS]},
                                   timeout_s=t.timeout_s, tool_names=list(TRACKED_TOOLS))
        closers.append(tracker.close)
        tracker.start_tracking()
        carm = FolderCArm(rig.carm.image_folder, rig.carm.calibration, timeout_s=rig.carm.timeout_s, operator=operator)
        model = NominalPanda(cfg.needle_guide)
        closers.append(model.close)
        patient = load_scene_patient(cfg)
        phantom = None
        if rig.carm.phantom is not None:
            phantom = load_phantom(rig.carm.phantom)
            phantom.mount = lambda: operator.confirm("Clamp the C-arm bead phantom to the patient reference.")
            phantom.unmount = lambda: operator.confirm("Take the bead phantom off the patient reference.")
        navigation = None
        if "navigation" in rig.robots:
            nav = rig.robots["navigation"]
            navigation = FrankyArm(nav.hostname, "navigation", nav.realtime)
            closers.append(navigation.close)
        dev = RigDevices(rig, arm, tracker, carm, operator, model, patient_registration_target(patient, cfg.patient.target_level),
                         room_model(cfg), navigation, phantom, target_level=cfg.patient.target_level,
                         tolerances=ProcedureTolerances.from_scene(cfg.procedure))
    except Exception:
        for f in reversed(closers):
            f()
        raise
    dev._closers += closers
    return dev


def open_rig(rig: SimRig | LabRig, progress: bool | None = None) -> RigDevices:
    return open_sim(rig, progress) if isinstance(rig, SimRig) else open_lab(rig)


def new_rehearsal(dev: RigDevices, out: str | Path, settings: RehearsalSettings | None = None,
                  calibration: CalibrationSet | None = None, verify: Verifier | None = None,
                  plan_source: Callable[..., Any] | None = None, **kwargs: Any) -> Rehearsal:
    """A rehearsal on ``dev`` that receives the rig's ports only; the verifier and a plan source (evaluation code
    that reads the truth) reach it as ports too."""
    from twinsim.procedure.rehearsal import Rehearsal, Verifier
    from twinsim.view.recorder import TwinRecorder

    d = dev.devices
    # The twin's timeline: the procedure reads the tracker through the recorder's tap, itself behind a port.
    recorder = kwargs.pop("recorder", None) or TwinRecorder(d.tracker, d.arm, d.room_model, rig=d.rig_name,
                                                            wrap=lambda t: port(t, Tracker))
    return Rehearsal(d, Path(out), settings, calibration, port(verify, Verifier) if verify is not None else None,
                     plan_source=callable_port(plan_source) if plan_source is not None else None, recorder=recorder, **kwargs)
