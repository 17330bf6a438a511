"""``twinsim/NeedleGuideAlign-v0``: bring the needle guide onto a planned transpedicular path.

The goal is where the procedure docks: the guide's tip on the path's axis, ``standoff_mm``
outside the skin, its bore along the path. Each episode starts with the guide near it (offset
up to ``start_offset_mm``, tilted up to ``start_tilt_deg``), on a side drawn from the seed.

- **Observation** (what the system senses, nothing else): the tracked guide tip and bore axis
  relative to the path (the goal's frame: z along the path into the patient; mm and a unit
  vector), the joint readings (rad), and whether the guide and the reference were tracked.
  The path itself is an input, as a plan file is.
- **Action**: a bounded Cartesian increment of the guide in the goal's frame: up to
  ``max_step_mm`` along x, y, z and ``max_step_deg`` about x and y (the roll about the bore
  does not matter), turning about the tip. It goes to the arm as a joint command through the
  nominal kinematics and the calibration, and the simulated arm moves over simulated time.
- **Reward** (evaluation: it reads the truth): minus the true tip's distance to the goal
  (per 10 mm) and the true bore's angle to the path (per 5 deg), each step; +5 on success,
  -5 on failure.
- **Termination**: success when the *tracked* tip is within ``tol_mm`` and the tracked axis
  within ``tol_deg`` (what a controller can know); failure on a collision (the arm's reflex),
  on the guide or reference lost for more than ``max_lost_steps`` steps, or a silent tracker.
  Truncation after ``max_steps``.

The planned paths are the planner's on the true vertebra (task generation, like a goal
sampler); the room, its noise and its faults are a scenario file's (``scenario=...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as pb
from gymnasium import spaces

from twinsim import frames
from twinsim.envs.observe import GUIDE_OBS_SIZE, guide_errors, guide_observation
from twinsim.hal.errors import ConnectionLost, HalError, MotionAborted
from twinsim.motion.planner import limit_margin_rad
from twinsim.robot import panda
from twinsim.robot.kinematics import IKError
from twinsim.sim.markers_in_room import facing
from twinsim.twin.tracker_view import ToolIndex

SIDES = ("left", "right")
START_DRAWS = 50


class NeedleGuideAlignEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, scenario: str | Path | None = None, rig: str | Path | None = None, level: str | None = None,
                 side: str | None = None, max_steps: int = 60, max_step_mm: float = 2.0, max_step_deg: float = 1.0,
                 tol_mm: float = 1.0, tol_deg: float = 1.0, standoff_mm: float = 15.0, start_offset_mm: float = 15.0,
                 start_tilt_deg: float = 5.0, frames_per_step: int = 3, max_lost_steps: int = 2,
                 render_mode: str | None = "rgb_array", render_size: tuple[int, int] = (320, 240)) -> None:
        from twinsim.envs.rig_session import RigSession

        if side is not None and side not in SIDES:
            raise ValueError(f"side must be one of {SIDES} or None (drawn per episode), got {side!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.session = RigSession(scenario, rig, level, env_name="NeedleGuideAlign")
        self.side, self.max_steps = side, max_steps
        self.max_step_mm, self.max_step_deg, self.tol_mm, self.tol_deg = max_step_mm, max_step_deg, tol_mm, tol_deg
        self.start_offset_mm, self.start_tilt_deg, self.standoff_mm = start_offset_mm, start_tilt_deg, standoff_mm
        self.frames_per_step, self.max_lost_steps = frames_per_step, max_lost_steps
        self.render_mode, self.render_size = render_mode, render_size
        dev = self.session.dev
        self.tools = ToolIndex(dev.tracker)
        dev.carm.park()  # the guide is placed after the X-rays, with the C-arm rolled away
        self._q_goal_seed: dict[str, np.ndarray] = {}
        self.goals = self._goals()
        lo, hi = panda.SOFT_LIMITS_RAD[:, 0] - 0.1, panda.SOFT_LIMITS_RAD[:, 1] + 0.1
        self.observation_space = spaces.Box(np.r_[[-1000.0] * 3, [-1.0] * 3, lo, 0.0].astype(np.float32),
                                            np.r_[[1000.0] * 3, [1.0] * 3, hi, 1.0].astype(np.float32), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (5,), dtype=np.float32)
        self._last = np.zeros(GUIDE_OBS_SIZE, dtype=np.float32)

    # ---- task set-up (truth: the paths and where they leave the skin) ------------------
    def _goals(self) -> dict[str, dict[str, Any]]:
        from twinsim.evaluation.placement_truth import true_T_world_ref_mm
        from twinsim.evaluation.plan_truth import TrueVertebra
        from twinsim.planning.settings import PlanSettings
        from twinsim.recon.fit import default_model_name
        from twinsim.shape.model import load_model

        s = self.session
        room, level = s.room, s.level
        truth = TrueVertebra(room.patient.vertebra(level), load_model(default_model_name(level)), PlanSettings(),
                             landmarks=s.dev.operator.landmarks_of_level(level))
        T_world_ct_mm = frames.scale_translation(room.T_world_ct, 1000.0)
        T_ref_world = frames.invert(true_T_world_ref_mm(s.dev.tracker.vega))
        goals = {}
        for side in SIDES:
            p = truth.ceiling.paths[side]
            entry_w = frames.transform_points(T_world_ct_mm, p.entry_mm)
            target_w = frames.transform_points(T_world_ct_mm, p.target_mm)
            axis_w = (target_w - entry_w) / np.linalg.norm(target_w - entry_w)
            skin_w = self._skin_exit_mm(target_w, axis_w)
            tip_w = skin_w - axis_w * self.standoff_mm
            T_ref_goal = self._reachable_goal(T_ref_world, tip_w, axis_w, side)
            goals[side] = {"T_ref_goal_mm": T_ref_goal, "entry_ref_mm": frames.transform_points(T_ref_world, entry_w),
                           "target_ref_mm": frames.transform_points(T_ref_world, target_w)}
        return goals

    def _skin_exit_mm(self, target_w_mm: np.ndarray, axis_w: np.ndarray) -> np.ndarray:
        room = self.session.room
        start = (target_w_mm - axis_w * 300.0) * 1e-3
        hits = pb.rayTestBatch([start.tolist()], [(target_w_mm * 1e-3).tolist()], physicsClientId=room.client)
        if hits[0][0] != room.skin_body:
            raise ValueError("NeedleGuideAlign: the path's axis does not meet the skin within 300 mm of the target")
        return np.asarray(hits[0][3]) * 1000.0

    def _reachable_goal(self, T_ref_world_mm: np.ndarray, tip_w_mm: np.ndarray, axis_w: np.ndarray, side: str) -> np.ndarray:
        """The goal's roll about the path: the one the nominal model reaches with the widest joint margin."""
        s = self.session
        # Also from home turned about joint 1 to face the goal: the damped IK then starts on the right side.
        tip_base = frames.transform_points(frames.invert(s.cal.T_ref_base) @ T_ref_world_mm, tip_w_mm)
        aimed = s.home_q.copy()
        aimed[0] = np.clip(np.arctan2(tip_base[1], tip_base[0]), *panda.SOFT_LIMITS_RAD[0])
        best, best_margin = None, -np.inf
        for roll in np.linspace(0.0, 2 * np.pi, 12, endpoint=False):
            R = frames.rotation_about_axis(axis_w, roll) @ facing(np.zeros(3), axis_w)
            T_ref_goal = T_ref_world_mm @ frames.make_transform(R, tip_w_mm)
            q = None
            for seed in (s.home_q, aimed):
                try:
                    q = self._ik(T_ref_goal, seed)
                    break
                except IKError:
                    continue
            if q is None:
                continue
            margin = limit_margin_rad(q)
            if margin > best_margin:
                best, best_margin, self._q_goal_seed[side] = T_ref_goal, margin, q
        if best is None:
            raise ValueError(f"NeedleGuideAlign: the {side} path's goal is out of the robot's reach at every roll")
        return best

    def _ik(self, T_ref_tool_mm: np.ndarray, seed_q: np.ndarray) -> np.ndarray:
        cal, model = self.session.cal, self.session.dev.model
        T_base_flange = frames.invert(cal.T_ref_base) @ T_ref_tool_mm @ frames.invert(cal.T_flange_tool)
        return model.ik(frames.scale_translation(T_base_flange, 1e-3), seed_q, panda.FLANGE_LINK)

    def _tool_from_joints(self, q: np.ndarray) -> np.ndarray:
        cal, model = self.session.cal, self.session.dev.model
        return cal.T_ref_base @ frames.scale_translation(model.fk_m(q, panda.FLANGE_LINK), 1000.0) @ cal.T_flange_tool

    # ---- sensing (the tracker and the joints only) -------------------------------------
    def _sense(self) -> tuple[np.ndarray, bool]:
        dev = self.session.dev
        return guide_observation(dev.tracker, self.tools, dev.arm.read_joints_rad(), self.session.cal,
                                 self.goal["T_ref_goal_mm"], self.frames_per_step, self._last)

    @staticmethod
    def errors(obs: np.ndarray) -> tuple[float, float]:
        """Tracked tip distance (mm) and axis angle (deg) to the goal, from an observation."""
        return guide_errors(obs)

    # ---- truth (reward and evaluation only) ---------------------------------------------
    def _true_errors(self) -> tuple[float, float]:
        from twinsim.evaluation.placement_truth import true_T_world_ref_mm

        s = self.session
        T_ref_tip = frames.invert(true_T_world_ref_mm(s.dev.tracker.vega)) @ frames.scale_translation(
            s.room.link_pose("operation", panda.TOOL_TIP_LINK), 1000.0)
        G = self.goal["T_ref_goal_mm"]
        return (float(np.linalg.norm(T_ref_tip[:3, 3] - G[:3, 3])),
                frames.angle_between_deg(T_ref_tip[:3, 2], G[:3, 2]))

    # ---- gymnasium -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "scenario" in options:  # faults for this episode on: another scenario file's (or None: none)
            self.session.use_faults_of(options["scenario"])
        rng = self.np_random
        s = self.session
        s.reset(int(rng.integers(2**31)))
        side = (options or {}).get("side", self.side) or SIDES[int(rng.integers(2))]
        self.goal = self.goals[side]
        G = self.goal["T_ref_goal_mm"]
        q_goal = self._q_goal_seed[side]
        q_start = None
        for _ in range(START_DRAWS):  # near the edge of the arm's reach some starts are out of it: draw again
            d = rng.normal(size=3)
            o = d / np.linalg.norm(d) * self.start_offset_mm * rng.uniform(0.5, 1.0)
            o[2] = -abs(o[2])  # in the goal's frame: never deeper than the goal, towards the skin
            tilt_axis = G[:3, :3] @ np.r_[rng.normal(size=2), 0.0]
            tilt = frames.rotation_about_axis(tilt_axis / np.linalg.norm(tilt_axis),
                                              np.deg2rad(self.start_tilt_deg * rng.uniform()))
            try:
                q_start = self._ik(frames.make_transform(tilt @ G[:3, :3], G[:3, 3] + G[:3, :3] @ o), q_goal)
                break
            except IKError:
                continue
        if q_start is None:
            raise RuntimeError(f"NeedleGuideAlign: no reachable start near the {side} goal in {START_DRAWS} draws")
        s.room.set_joint_positions("operation", q_start + s.dev.arm.zero_offset_rad)
        self.steps, self.lost_steps = 0, 0
        obs, tracked = self._sense()
        self._last = obs
        return obs, {"side": side, "tracked": tracked}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(5), -1.0, 1.0)
        dev = self.session.dev
        G = self.goal["T_ref_goal_mm"]
        self.steps += 1
        info: dict[str, Any] = {"side": [k for k, g in self.goals.items() if g is self.goal][0]}
        q = dev.arm.read_joints_rad()
        T = self._tool_from_joints(q)
        rot = frames.rotation_about_axis(G[:3, :3] @ np.r_[a[3:5], 0.0], np.deg2rad(self.max_step_deg) * np.linalg.norm(a[3:5])) \
            if np.linalg.norm(a[3:5]) > 1e-9 else np.eye(3)
        T_cmd = frames.make_transform(rot @ T[:3, :3], T[:3, 3] + G[:3, :3] @ (a[:3] * self.max_step_mm))
        failure = None
        try:
            dev.arm.move_joints(self._ik(T_cmd, q), speed_factor=0.2)
        except IKError:
            info["ik_failed"] = True  # no motion: the command is outside the reachable set
        except MotionAborted as exc:
            failure = f"collision: {exc}"
        try:
            obs, tracked = self._sense()
        except ConnectionLost as exc:
            obs, tracked, failure = self._last.copy(), False, f"tracker: {exc}"
        except HalError as exc:
            obs, tracked, failure = self._last.copy(), False, str(exc)
        self.lost_steps = 0 if tracked else self.lost_steps + 1
        if failure is None and self.lost_steps > self.max_lost_steps:
            failure = f"tool lost for {self.lost_steps} steps"
        self._last = obs
        d_true, ang_true = self._true_errors()
        d, ang = self.errors(obs)
        success = failure is None and tracked and d <= self.tol_mm and ang <= self.tol_deg
        reward = -(d_true / 10.0 + ang_true / 5.0) + (5.0 if success else 0.0) - (5.0 if failure else 0.0)
        info.update(tracked=tracked, tip_error_mm=d, axis_error_deg=ang, true_tip_error_mm=d_true, true_axis_error_deg=ang_true,
                    is_success=success, failure=failure)
        terminated = success or failure is not None
        truncated = not terminated and self.steps >= self.max_steps
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from twinsim.sim.scene_config import ViewConfig
        from twinsim.sim.snapshot import render_view

        room = self.session.room
        target = room.link_pose("operation", panda.TOOL_TIP_LINK)[:3, 3]
        return render_view(room, ViewConfig("guide", target, 1.1, 60.0, -35.0), self.render_size)

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()
            self.session = None
