"""Scenario files: validation, the fast scenarios end to end (as CI runs them), and an interlock switched off."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinsim.scenario.schema import FAULT_KINDS, ScenarioFileError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_the_shipped_scenarios_are_valid_and_cover_every_fault_and_two_levels():
    scenarios = [load_scenario(p) for p in SHIPPED]
    assert len(scenarios) >= 12
    kinds = {f.kind for s in scenarios for f in s.faults}
    assert kinds == set(FAULT_KINDS), set(FAULT_KINDS) - kinds
    happy_levels = {s.level for s in scenarios if not s.faults and s.expect.outcome == "completed"}
    assert "L1" in happy_levels and len(happy_levels) >= 2
    assert len({s.name for s in scenarios}) == len(scenarios)
    assert any(s.ci for s in scenarios) and not all(s.ci for s in scenarios)


@pytest.mark.parametrize(("edit", "words"), [
    (("duration_s: 5.0", "duraton_s: 5.0"), "unknown key 'faults.0.occlusion.duraton_s'"),
    (("kind: occlusion", "kind: earthquake"), "faults.0"),
    (("at: {step: x-rays}", "at: {step: xrays}"), "unknown step 'xrays'"),
    (("  step: x-rays\n  reason: not tracked", "  reason: not tracked"), "say at which 'step'"),
    (("tool: carm", "tool: scalpel"), "unknown tool 'scalpel'"),
])
def test_a_bad_scenario_file_is_refused_naming_the_problem(tmp_path, edit, words):
    text = (ROOT / "scenarios" / "occlusion-carm-marker.yaml").read_text()
    assert edit[0] in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ScenarioFileError, match="bad.yaml") as exc:
        load_scenario(bad)
    assert words in str(exc.value)


def test_scenario_check_exits_2_naming_the_misspelt_key(tmp_path):
    text = (ROOT / "scenarios" / "occlusion-carm-marker.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("duration_s:", "duraton_s:"))
    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "scenario", "check", str(bad), *map(str, SHIPPED)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "duraton_s" in out.stderr and "bad.yaml" in out.stderr and "Traceback" not in out.stderr


def test_a_scenarios_instrument_reaches_the_planner_and_a_misspelt_one_is_refused(tmp_path):
    from twinsim.planning.settings import PlanSettings
    from twinsim.scenario.runner import _plan_settings

    text = (ROOT / "scenarios" / "happy-L1.yaml").read_text()
    assert _plan_settings(load_scenario(ROOT / "scenarios" / "happy-L1.yaml")) == PlanSettings()
    good = tmp_path / "good.yaml"
    good.write_text(text + "plan: {cannula_diameter_mm: 3.0, margin_mm: 0.5}\n")
    got = _plan_settings(load_scenario(good))
    assert (got.cannula_diameter_mm, got.margin_mm) == (3.0, 0.5)
    assert got.max_tilt_deg == PlanSettings().max_tilt_deg
    for plan, words in [("{cannula_mm: 3.0}", "plan.cannula_mm"), ("{cannula_diameter_mm: 0}", "plan.cannula_diameter_mm")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text + f"plan: {plan}\n")
        with pytest.raises(ScenarioFileError, match="bad.yaml") as exc:
            load_scenario(bad)
        assert words in str(exc.value)


@pytest.mark.slow
def test_the_ci_scenarios_meet_their_expectations(tmp_path, example_patient_model):
    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "scenario", "run", "--ci", "-o", str(tmp_path), "--workers", "1",
                          *map(str, SHIPPED)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    run = json.loads((tmp_path / "scenarios.json").read_text())
    # Serial here: beside the suite's other worker on 2 cores, two more processes only add their start-up.
    assert run["complete"] and run["runner"]["backend"] == "serial" and run["runner"]["failed"] == 0
    results = run["results"]
    assert len(results) == sum(load_scenario(p).ci for p in SHIPPED) >= 5
    assert all(r["passed"] for r in results)
    for r in results:
        log = json.loads((tmp_path / r["name"] / "rehearsal.json").read_text())
        assert log["outcome"] == "stopped" and log["stop"]["step"] and log["motions"]["sent"] == 0  # each stops before any motion
        assert all(f["started_s"] is not None for f in r["faults"])
    assert "scenario" in out.stdout and "pass" in out.stdout and "FAIL" not in out.stdout


@pytest.mark.slow
def test_a_fault_that_should_stop_the_robot_fails_the_scenario_when_the_interlock_is_off(tmp_path, example_patient_model,
                                                                                          monkeypatch):
    import twinsim.procedure.rehearsal as rehearsal
    from twinsim.motion.execution import Watch
    from twinsim.scenario.runner import run_scenario

    text = (ROOT / "scenarios" / "occlusion-guide-during-motion.yaml").read_text()
    # The tracker falls silent as the right guide starts: the run need not go on past what this test is about.
    text = text.replace("expect:", "  - kind: tracker_silent\n    at: {step: guide right, after_s: 0.0}\nexpect:")
    (tmp_path / "sc.yaml").write_text(text)
    sc = load_scenario(tmp_path / "sc.yaml")
    # The tracking interlock switched off: a guide lost for any number of frames no longer stops the arm.
    monkeypatch.setattr(rehearsal, "Watch", functools.partial(Watch, max_lost_frames=10**9))
    res = run_scenario(sc, tmp_path / "run")
    assert not res.passed and res.got.startswith("stopped at guide right"), res.got
    assert any("stop at guide left" in p for p in res.problems), res.problems
    occlusion = res.faults[0]
    assert occlusion["started_s"] is not None and occlusion["ended_s"] is not None  # it did happen, mid-motion
