"""``twinsim bench envs``: each environment's step rate, its baselines' returns and success, beside panda-gym's PandaReach-v3.

All in one run on one machine, so the ratios stand even where the absolute rates do not (a
shared machine is noisy; CPU only):

- NeedleGuideAlign: the scripted controller (:class:`AlignController`) and a random policy,
  ``--episodes`` seeded episodes each (seeds 0..N-1, no faults unless ``--scenario``); success
  rate with its Wilson 95 % interval, mean return, steps per episode, the *true* tip and axis
  errors at the end of each successful episode, and steps per second (median over episodes,
  the steps' time only: not the resets).
- ViewSelection: the procedure's default second view (RAO 60) and a random view,
  ``--view-episodes`` each; success (the view could be taken and the shortened fit is within
  1.5 mm mean surface distance), mean return (minus that distance), seconds per step (each
  a fresh reconstruction: the cache is cleared between episodes).
- PandaReach-v3 (panda-gym, PyBullet): random actions, the same number of steps, steps per
  second: the usual reference for a PyBullet Franka environment.
- AsyncVectorEnv: NeedleGuideAlign under 2 worker processes against one env stepped in this
  process, random actions, the same number of steps each: the throughput gain on 2 cores.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.bench.plan import wilson_interval


def _align_episodes(env: Any, policy_factory: Any, episodes: int) -> dict[str, Any]:
    rates, returns, steps, successes, tips, axes, failures = [], [], [], 0, [], [], {}
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        policy = policy_factory(seed)
        total, n, t_steps = 0.0, 0, 0.0
        while True:
            a = policy(obs)
            t0 = time.perf_counter()
            obs, r, term, trunc, info = env.step(a)
            t_steps += time.perf_counter() - t0
            total += r
            n += 1
            if term or trunc:
                break
        rates.append(n / t_steps)
        returns.append(total)
        steps.append(n)
        if info.get("is_success"):
            successes += 1
            tips.append(info["true_tip_error_mm"])
            axes.append(info["true_axis_error_deg"])
        elif info.get("failure"):
            kind = info["failure"].split(":")[0]
            failures[kind] = failures.get(kind, 0) + 1
    lo, hi = wilson_interval(successes, episodes)
    return {"episodes": episodes, "success": successes, "success_rate": successes / episodes, "success_ci95": [lo, hi],
            "mean_return": float(np.mean(returns)), "mean_steps": float(np.mean(steps)),
            "steps_per_s_median": float(np.median(rates)), "failures": failures,
            "true_tip_error_mm_at_success": {"median": float(np.median(tips)), "max": float(np.max(tips))} if tips else None,
            "true_axis_error_deg_at_success": {"median": float(np.median(axes)), "max": float(np.max(axes))} if axes else None}


def _view_episodes(env: Any, choose: Any, episodes: int) -> dict[str, Any]:
    returns, secs, successes, views, failed = [], [], 0, [], 0
    for seed in range(episodes):
        env.reset(seed=seed)
        env.unwrapped._results.clear()  # time a real reconstruction, not the cache
        a = choose(seed)
        t0 = time.perf_counter()
        _, r, _, _, info = env.step(a)
        secs.append(time.perf_counter() - t0)
        returns.append(r)
        views.append(info["view"])
        successes += bool(info.get("is_success"))
        failed += "failure" in info
    lo, hi = wilson_interval(successes, episodes)
    return {"episodes": episodes, "success": successes, "success_rate": successes / episodes, "success_ci95": [lo, hi],
            "mean_return": float(np.mean(returns)), "views_not_taken": failed, "s_per_step_median": float(np.median(secs)),
            "views": views}


def _panda_reach(steps: int) -> dict[str, Any]:
    import gymnasium as gym
    import panda_gym  # noqa: F401 (registers PandaReach-v3)

    env = gym.make("PandaReach-v3")
    rate = _random_steps_per_s(env, steps)
    env.close()
    return {"steps": steps, "steps_per_s": rate}


def _random_steps_per_s(env: Any, steps: int) -> float:
    """Seeded random actions, resetting at episode ends; the steps' rate (resets included)."""
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def _vector(steps: int, scenario: str | None) -> dict[str, Any]:
    import gymnasium as gym

    kwargs = {"scenario": scenario} if scenario else {}
    single = gym.make("twinsim/NeedleGuideAlign-v0", **kwargs)
    one = _random_steps_per_s(single, steps)
    single.close()
    vec = gym.vector.AsyncVectorEnv([lambda: gym.make("twinsim/NeedleGuideAlign-v0", **kwargs)] * 2)
    vec.reset(seed=0)
    vec.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps // 2):
        vec.step(vec.action_space.sample())
    two = (steps // 2) * 2 / (time.perf_counter() - t0)
    vec.close()
    return {"steps": steps, "single_steps_per_s": one, "async2_steps_per_s": two, "gain": two / one}


def main(episodes: int = 20, view_episodes: int = 4, vector_steps: int = 100, scenario: str | None = None,
         out: Path | None = None) -> dict[str, Any]:
    import gymnasium as gym

    import twinsim  # noqa: F401 (registers the environments)
    from twinsim.envs.policies import AlignController, RandomPolicy
    from twinsim.report import table, write_json

    kwargs = {"scenario": scenario} if scenario else {}
    print(f"NeedleGuideAlign: {episodes} scripted and {episodes} random episodes ...", flush=True)
    env = gym.make("twinsim/NeedleGuideAlign-v0", **kwargs)
    u = env.unwrapped
    align = {"scripted": _align_episodes(env, lambda s: AlignController(u.max_step_mm, u.max_step_deg), episodes),
             "random": _align_episodes(env, lambda s: RandomPolicy(env.action_space, s), episodes)}
    env.close()
    print(f"ViewSelection: {view_episodes} + {view_episodes} episodes (a reconstruction each) ...", flush=True)
    venv = gym.make("twinsim/ViewSelection-v0", **kwargs)
    vu = venv.unwrapped
    rng = np.random.default_rng(0)
    views = {"scripted (RAO 60)": _view_episodes(venv, lambda s: vu.action_for(-60.0, 0.0), view_episodes),
             "random": _view_episodes(venv, lambda s: rng.uniform(-1, 1, 2).astype(np.float32), view_episodes)}
    venv.close()
    n_ref = int(sum(a["mean_steps"] * a["episodes"] for a in align.values()))
    print(f"PandaReach-v3: {n_ref} random steps ...", flush=True)
    reach = _panda_reach(max(n_ref, 200))
    print(f"AsyncVectorEnv: {vector_steps} steps with 1 env, then with 2 workers ...", flush=True)
    vector = _vector(vector_steps, scenario)
    result = {"benchmark": "envs", "scenario": scenario, "machine": platform.processor() or platform.machine(),
              "NeedleGuideAlign": align, "ViewSelection": views, "PandaReach-v3": reach, "vector": vector,
              "ratio_needle_guide_align_to_panda_reach": align["scripted"]["steps_per_s_median"] / reach["steps_per_s"]}
    rows = [[f"NeedleGuideAlign {k}", f"{a['success']}/{a['episodes']} ({a['success_ci95'][0]:.0%}-{a['success_ci95'][1]:.0%})",
             f"{a['mean_return']:.1f}", f"{a['mean_steps']:.1f}", f"{a['steps_per_s_median']:.1f}",
             (f"{a['true_tip_error_mm_at_success']['median']:.2f} mm / {a['true_axis_error_deg_at_success']['median']:.2f} deg"
              if a["true_tip_error_mm_at_success"] else "-")] for k, a in align.items()]
    rows += [[f"ViewSelection {k}", f"{v['success']}/{v['episodes']}", f"{v['mean_return']:.2f}", "1",
              f"{1 / v['s_per_step_median']:.3f}", f"views not taken: {v['views_not_taken']}"] for k, v in views.items()]
    rows.append(["PandaReach-v3 (panda-gym) random", "-", "-", "-", f"{reach['steps_per_s']:.0f}", "reference, same run"])
    rows.append(["NeedleGuideAlign x2 AsyncVectorEnv", "-", "-", "-", f"{vector['async2_steps_per_s']:.1f}",
                 f"gain {vector['gain']:.2f}x over 1 env ({vector['single_steps_per_s']:.1f}/s)"])
    print(table(["env / policy", "success (95 % CI)", "mean return", "steps/episode", "steps/s", "true error at success (median)"],
                rows))
    print(f"NeedleGuideAlign steps at {result['ratio_needle_guide_align_to_panda_reach']:.3f}x PandaReach-v3's rate "
          "(each step: a timed arm motion checked for contact every 4 mrad, and 5 tracker frames with ray-traced line of sight)")
    path = write_json(out or Path("out/bench_envs.json"), result)
    print(f"wrote {path}")
    return result
