"""The gymnasium environments: registered on import, checked by gymnasium, deterministic under a seed, solvable."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import twinsim  # noqa: F401 (registers the environments)

pytestmark = pytest.mark.slow


def _rollout(env: gym.Env, seed: int, n: int) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rng = np.random.default_rng(123)
    for _ in range(n):
        a = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        out += [obs, np.float64(r)]
        if term or trunc:
            break
    return out


@pytest.fixture(scope="module")
def align(example_patient_model):
    env = gym.make("twinsim/NeedleGuideAlign-v0")
    yield env
    env.close()


def test_needle_guide_align_passes_the_checker_and_repeats_bit_for_bit(align):
    check_env(align.unwrapped)
    a, b = _rollout(align, 11, 4), _rollout(align, 11, 4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = _rollout(align, 12, 4)
    assert not np.array_equal(a[0], c[0])  # another seed, another start
    img = align.render()
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8 and img.std() > 5


def test_the_scripted_controller_solves_needle_guide_align_and_random_does_not(align):
    from twinsim.envs.policies import AlignController, RandomPolicy

    def run(policy, seed):
        obs, _ = align.reset(seed=seed)
        while True:
            obs, _, term, trunc, info = align.step(policy(obs))
            if term or trunc:
                return info

    scripted = [run(AlignController(), s) for s in range(4)]
    assert sum(i["is_success"] for i in scripted) >= 3  # a floor: `twinsim bench envs` reports the rate
    for i in scripted:
        if i["is_success"]:
            assert i["true_tip_error_mm"] < 2.0 and i["true_axis_error_deg"] < 2.0  # what the tracker said held in truth
    assert not run(RandomPolicy(align.action_space, 0), 0)["is_success"]


def test_an_occluded_guide_ends_the_episode_as_a_failure(align, tmp_path):
    sc = tmp_path / "occluded.yaml"
    sc.write_text("format: twinsim-scenario/1\nname: occluded\nfaults:\n  - kind: occlusion\n    tool: needle_guide\n"
                  "    at: {time_s: 0.3}\n    duration_s: 30\nexpect: {outcome: completed}\n")
    try:
        obs, info = align.reset(seed=0, options={"scenario": str(sc)})
        seen = [info["tracked"]]
        for _ in range(10):
            obs, _, term, trunc, info = align.step(np.zeros(5, np.float32))
            seen.append(info["tracked"])
            if term or trunc:
                break
        assert seen[0] and not seen[-1] and obs[13] == 0.0
        assert term and not info["is_success"] and "tool lost" in info["failure"]
    finally:
        align.reset(seed=0, options={"scenario": None})
    assert align.step(np.zeros(5, np.float32))[4]["tracked"]  # the occluder is gone with the fault


def test_a_scenario_with_step_triggered_faults_is_refused_by_an_env(example_patient_model):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scenarios" / "robot-reflex.yaml"
    with pytest.raises(ValueError, match="no procedure steps"):
        gym.make("twinsim/NeedleGuideAlign-v0", scenario=str(path))


def test_view_selection_passes_the_checker_and_repeats(example_patient_model):
    env = gym.make("twinsim/ViewSelection-v0", fit_iterations=(2, 1, 1))  # the fit's quality is not under test here
    try:
        check_env(env.unwrapped)
        a, b = _rollout(env, 3, 1), _rollout(env, 3, 1)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        env.reset(seed=3)
        _, r, term, _, info = env.step(env.unwrapped.action_for(60.0, 30.0))  # collides with the operation robot
        assert term and r == -20.0 and "would touch" in info["failure"]
        _, r, _, _, info = env.step(env.unwrapped.action_for(-60.0, 0.0))
        assert "msd_mm" in info and r == -info["msd_mm"] and env.render().ndim == 3
    finally:
        env.close()
