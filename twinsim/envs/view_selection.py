"""``twinsim/ViewSelection-v0``: choose the second X-ray's C-arm angles, given the first, for the best reconstruction.

One step per episode. At reset the first view (AP by default) is taken through the tracker
and the clinician marks its landmarks. The action is the second view's (LAO, cranial),
scaled (below). The step turns the C-arm there (a view that would collide is refused by the C-arm),
takes the tracked X-ray (the C-arm's marker must be seen), has the landmarks marked, and
reconstructs the vertebra from the two.

- **Action**: the second view's LAO (per 90 deg, + towards the patient's left) and cranial
  angle (per 30 deg), each in [-1, 1].
- **Observation** (sensed): the first view's angles (per 90 deg and 30 deg) and its clicks,
  each landmark's pixel over the image size (-1 where not marked).
- **Reward** (evaluation: truth): minus the reconstruction's mean surface distance to the
  true vertebra (mm, both directions, in ``ref``); -20 for a view that could not be taken.
- ``info["is_success"]``: the view was taken and that distance is at most ``success_msd_mm``.

**Keeping it affordable** (a full reconstruction is tens of seconds on a CPU): the fit runs
shortened (``fit_iterations`` per pyramid level, no restarts); the first
view is taken once per seed; the action is snapped to a ``grid_deg`` grid and each (seed,
snapped view) result is kept, so repeated views, vectorised duplicates and the determinism
check cost nothing. Figures from this env are therefore for a shortened fit, not the
reconstruction benchmark's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from twinsim.hal.errors import HalError

FAILED_VIEW_REWARD = -20.0
LAO_RANGE_DEG = (-90.0, 90.0)
CRANIAL_RANGE_DEG = (-30.0, 30.0)


class ViewSelectionEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(self, scenario: str | Path | None = None, rig: str | Path | None = None, level: str | None = None,
                 first_view: str = "AP", grid_deg: float = 5.0, fit_iterations: tuple[int, int, int] = (25, 15, 10),
                 success_msd_mm: float = 1.5, render_mode: str | None = "rgb_array") -> None:
        from twinsim.envs.rig_session import RigSession
        from twinsim.hal.interfaces import CArmView
        from twinsim.imaging.landmarks_file import CLICKABLE
        from twinsim.imaging.views import parse_view

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.session = RigSession(scenario, rig, level, allowed_faults=("occlusion", "patient_shift", "breathing",
                                                                       "tracker_silent"), env_name="ViewSelection")
        v = parse_view(first_view)
        self.first = CArmView(v.name, v.lao_deg, v.cranial_deg)
        self.grid_deg, self.fit_iterations, self.success_msd_mm = grid_deg, fit_iterations, success_msd_mm
        self.render_mode = render_mode
        self.names = CLICKABLE
        self.observation_space = spaces.Box(-1.0, 1.0, (2 + 2 * len(self.names),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)  # LAO per 90 deg, cranial per 30 deg
        self._results: dict[tuple[int, float, float], tuple[float, dict[str, Any]]] = {}
        self._first: dict[int, tuple[Any, dict[str, np.ndarray]]] = {}
        self._last_images: list[np.ndarray] = []
        from twinsim.recon.fit import default_model_name
        from twinsim.shape.model import load_model

        self.model = load_model(default_model_name(self.session.level))

    def _snap(self, action: np.ndarray) -> tuple[float, float]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0) * [LAO_RANGE_DEG[1], CRANIAL_RANGE_DEG[1]]
        lao, cran = (np.round(a / self.grid_deg) * self.grid_deg).tolist()
        return float(lao) + 0.0, float(cran) + 0.0  # + 0.0: no -0.0 key beside 0.0

    @staticmethod
    def action_for(lao_deg: float, cranial_deg: float) -> np.ndarray:
        """The action that asks for a view at these angles."""
        return np.array([lao_deg / LAO_RANGE_DEG[1], cranial_deg / CRANIAL_RANGE_DEG[1]], dtype=np.float32)

    def _observe(self, acq: Any, clicks: dict[str, np.ndarray]) -> np.ndarray:
        from twinsim.envs.observe import view_observation

        return view_observation(self.first.lao_deg, self.first.cranial_deg, clicks, acq.geometry.width_px,
                                acq.geometry.height_px, self.names)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        from twinsim.workflows.tracked_xray import acquire_tracked

        super().reset(seed=seed)
        if options and "scenario" in options:  # faults for this episode on: another scenario file's (or None: none)
            self.session.use_faults_of(options["scenario"])
        self.episode_seed = int(self.np_random.integers(2**31))
        s = self.session
        if self.episode_seed not in self._first:
            s.reset(self.episode_seed)
            acq = acquire_tracked(s.dev.carm, s.dev.tracker, s.cal.carm, self.first)
            clicks = s.dev.operator.mark_landmarks([acq], s.level, self.names)[0]
            self._first[self.episode_seed] = (acq, clicks)
        acq, clicks = self._first[self.episode_seed]
        self._last_images = [acq.image]
        return self._observe(acq, clicks), {"first_view": self.first.name}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        lao, cran = self._snap(action)
        key = (self.episode_seed, lao, cran)
        acq, clicks = self._first[self.episode_seed]
        if key not in self._results:
            self._results[key] = self._evaluate(lao, cran)
        reward, info = self._results[key]
        return self._observe(acq, clicks), float(reward), True, False, dict(info)

    def _evaluate(self, lao: float, cran: float) -> tuple[float, dict[str, Any]]:
        from twinsim.anatomy.meshing import SurfaceMesh
        from twinsim.evaluation.placement_truth import SimVerifier
        from twinsim.evaluation.recon_metrics import surface_metrics
        from twinsim.hal.interfaces import CArmView
        from twinsim.imaging.landmarks_file import Clicks
        from twinsim.recon.fit import FitSettings, reconstruct
        from twinsim.recon.initialization import InitializationError
        from twinsim.workflows.tracked_xray import acquire_tracked

        s = self.session
        s.reset(self.episode_seed + 1)
        first, clicks1 = self._first[self.episode_seed]
        view = CArmView(f"LAO{lao:g}_CRAN{cran:g}", lao, cran)
        info: dict[str, Any] = {"view": view.name, "lao_deg": lao, "cranial_deg": cran}
        try:
            second = acquire_tracked(s.dev.carm, s.dev.tracker, s.cal.carm, view)
            clicks2 = s.dev.operator.mark_landmarks([second], s.level, self.names)[0]
            r = reconstruct(self.model, [first, second], Clicks([clicks1, clicks2], s.level),
                            FitSettings(iterations=self.fit_iterations, restarts=0))
        except (HalError, InitializationError) as exc:
            info.update(failure=f"{type(exc).__name__}: {exc}", is_success=False)
            return FAILED_VIEW_REWARD, info
        finally:
            s.dev.carm.park()
        self._last_images = [first.image, second.image]
        T_ref_ct = np.linalg.inv(SimVerifier(s.dev, s.level).T_ct_ref_mm())
        truth = s.room.patient.vertebra(s.level).transformed(T_ref_ct, "ref")
        m = surface_metrics(SurfaceMesh(r.vertices_mm, r.faces, "ref"), truth)
        info.update(msd_mm=m["msd_mm"], hd95_mm=m["hd95_mm"], fit_s=r.wall_s, is_success=m["msd_mm"] <= self.success_msd_mm)
        return -m["msd_mm"], info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        tiles = [np.repeat((np.clip(im, 0, 1) * 255).astype(np.uint8)[:, :, None], 3, axis=2) for im in self._last_images]
        if not tiles:
            return np.zeros((128, 128, 3), dtype=np.uint8)
        h = max(t.shape[0] for t in tiles)
        return np.concatenate([np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles], axis=1)

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()
            self.session = None
