"""One simulated rig kept open across episodes: built once (seconds), reset to a seeded state at each episode.

Reset puts back everything an episode may have changed (patient motion, occluders, a silent
tracker, a reflex) and reseeds every random source in the room (tracker noise, the arm's
repeatability, the C-arm's detector noise), so a seeded episode is bit-identical when repeated.
Faults come from a scenario file: those with a time trigger fire at that time after the
episode starts; an episode has no procedure steps, so step triggers are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinsim.scenario.schema import AtStep, Scenario, load_scenario

EPISODE_FAULTS = ("occlusion", "patient_shift", "breathing", "robot_reflex", "tracker_silent")


class RigSession:
    def __init__(self, scenario: str | Path | None = None, rig: str | Path | None = None, level: str | None = None,
                 allowed_faults: tuple[str, ...] = EPISODE_FAULTS, env_name: str = "environment") -> None:
        from twinsim.hal.rig import SimRig, load_rig
        from twinsim.rigs.open_rig import open_rig
        from twinsim.twin.calibration_set import load_calibration

        self.allowed_faults, self.env_name = allowed_faults, env_name
        self.scenario: Scenario | None = load_scenario(scenario) if scenario else None
        sc = self.scenario
        self.episode_faults = self.check_faults(sc)
        spec = load_rig(sc.rig if sc and sc.rig else rig)
        if not isinstance(spec, SimRig):
            raise ValueError(f"{env_name} runs in the simulated room; {spec.name} is a lab rig")
        if sc is not None:
            spec = spec.model_copy(update={"seed": sc.seed, **({"scene": sc.scene} if sc.scene else {})})
        if spec.calibration is None or not spec.calibration.is_file():
            raise ValueError(f"{env_name}: the rig {spec.name} has no calibration file; run `twinsim calibrate` first")
        self.rig = spec
        self.dev = open_rig(spec, progress=False)
        try:
            self.cal = load_calibration(spec.calibration)
            self.level = (level or (sc.level if sc else None) or self.dev.target_level).upper()
            if sc is not None:
                self.dev.operator.click_sigma_mm = sc.click_noise_mm
            self.home_q = self.dev.arm.read_joints_rad()
            self.physical_home = self.dev.room.joint_positions("operation")
            self.faults: Any = None
        except Exception:
            self.dev.close()
            raise

    def check_faults(self, sc: Scenario | None) -> list[Any]:
        """A scenario's faults, if each can happen in an episode; otherwise a ``ValueError`` saying why not."""
        for f in sc.faults if sc else []:
            if f.kind not in self.allowed_faults:
                raise ValueError(f"{self.env_name}: the scenario's {f.kind} fault does not apply to an episode; "
                                 f"faults that do: {', '.join(self.allowed_faults)}")
            if isinstance(getattr(f, "at", None), AtStep):
                raise ValueError(f"{self.env_name}: the scenario's {f.kind} fault is triggered by the step {f.at.step!r}; "
                                 "an episode has no procedure steps: give it {time_s: ...} (seconds after the episode starts)")
        return list(sc.faults) if sc else []

    def use_faults_of(self, scenario: str | Path | None) -> None:
        """From the next reset on: the faults of another scenario file (its rig and seed are not taken: the room stays)."""
        self.episode_faults = self.check_faults(load_scenario(scenario) if scenario else None)

    @property
    def room(self) -> Any:
        return self.dev.room

    def reset(self, seed: int) -> None:
        """The room as built, every random source reseeded from ``seed``, the scenario's faults armed anew."""
        from twinsim.rigs.sim_reset import reset_sim_room
        from twinsim.scenario.faults import FaultInjector

        dev = self.dev
        if self.faults is not None:
            self.faults.close()  # what its faults did to the room is put back below
        reset_sim_room(dev, self.physical_home, seed)
        self.faults = FaultInjector(dev, self.episode_faults)
        dev.tracker.refill()  # before the first observation

    def close(self) -> None:
        if self.faults is not None:
            self.faults.undo()
            self.faults = None
        self.dev.close()
