"""Run a scenario: open its simulated rig, put its faults in, rehearse, and judge the outcome against the expectation.

The verdict is strict both ways: a procedure that completes where it should have stopped
(a fault quietly ignored) fails, and so does one that stops at another step, for another
reason, or a completion outside its accuracy bounds. A fault that never took effect (its
step never came) fails the scenario too: it tested nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinsim.hal.interfaces import CArmView
from twinsim.imaging.views import parse_view
from twinsim.procedure.steps import Outcome, StepState
from twinsim.scenario.schema import Scenario


@dataclass
class ScenarioResult:
    scenario: Scenario
    expected: str
    got: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    report: str | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.scenario.name, "file": str(self.scenario.path) if self.scenario.path else None,
                "expected": self.expected, "got": self.got, "passed": self.passed, "problems": self.problems,
                "figures": self.figures, "faults": self.faults, "report": self.report, "wall_s": self.wall_s}


def describe_expectation(sc: Scenario) -> str:
    e = sc.expect
    if e.outcome == "stopped":
        return f"stopped at {e.step}: {e.reason}"
    bounds = [f"tip <= {e.tip_error_mm_max:g} mm" if e.tip_error_mm_max else "",
              f"axis <= {e.axis_error_deg_max:g} deg" if e.axis_error_deg_max else "",
              "no breach" if e.no_breach else "", f"{e.reregistrations} re-registration(s)" if e.reregistrations else ""]
    return "completed" + (" (" + ", ".join(b for b in bounds if b) + ")" if any(bounds) else "")


def _views(sc: Scenario) -> tuple[CArmView, CArmView]:
    vs = [parse_view(v) for v in sc.views]
    return CArmView(vs[0].name, vs[0].lao_deg, vs[0].cranial_deg), CArmView(vs[1].name, vs[1].lao_deg, vs[1].cranial_deg)


def judge(sc: Scenario, log: Any, placed: dict[str, Any], reregistrations: int) -> tuple[str, list[str], dict[str, Any]]:
    """``(got, problems, figures)`` of a finished rehearsal against the scenario's expectation."""
    e, problems, figures = sc.expect, [], {}
    failed = [s for s in log.steps if s.state is StepState.FAILED]
    completed = log.outcome is Outcome.COMPLETED
    if completed:
        got = "completed"
        for side, g in sorted(placed.items()):
            if g.truth:
                figures[f"{side}_tip_mm"] = round(float(g.truth["tip_error_mm"]), 2)
                figures[f"{side}_axis_deg"] = round(float(g.truth["axis_error_deg"]), 2)
                if e.no_breach and g.truth.get("breach"):
                    problems.append(f"{side} guide: the needle breaches the true bone")
        tips = [v for k, v in figures.items() if k.endswith("_tip_mm")]
        axes = [v for k, v in figures.items() if k.endswith("_axis_deg")]
        if e.tip_error_mm_max is not None and (not tips or max(tips) > e.tip_error_mm_max):
            problems.append(f"tip error {max(tips) if tips else 'not measured'} mm above {e.tip_error_mm_max:g} mm")
        if e.axis_error_deg_max is not None and (not axes or max(axes) > e.axis_error_deg_max):
            problems.append(f"axis error {max(axes) if axes else 'not measured'} deg above {e.axis_error_deg_max:g} deg")
    else:
        last = failed[-1] if failed else None
        got = f"stopped at {last.name}: {last.error_type}" if last else f"stopped: {log.summary}"
        figures["error"] = last.error if last else log.summary
    if sc.plan and sc.plan.cannula_diameter_mm:
        figures["cannula_mm"] = sc.plan.cannula_diameter_mm  # the truth is scored with this cannula
    figures["reregistrations"] = reregistrations
    figures["motions_sent"] = log.meta.get("motions", {}).get("sent", 0)
    unchecked = log.meta.get("motions", {}).get("sent_without_passed_check", 0)
    if unchecked:
        problems.append(f"{unchecked} motion(s) reached the robot without a passed check")
    if e.outcome == "completed" and not completed:
        problems.append(f"expected completion, the procedure {log.summary}")
    if e.outcome == "stopped":
        if completed:
            problems.append(f"expected a stop at {e.step} ({e.reason}); the procedure completed: the fault went unnoticed")
        else:
            last = failed[-1] if failed else None
            if last is None or last.name != e.step:
                problems.append(f"expected a stop at {e.step}, it stopped at {last.name if last else '(no failed step)'}")
            elif e.reason not in (last.error_type or "") and e.reason.lower() not in (last.error or "").lower():
                problems.append(f"expected the reason {e.reason!r}, got {last.error_type}: {last.error}")
    if e.reregistrations is not None and reregistrations != e.reregistrations:
        problems.append(f"expected {e.reregistrations} re-registration(s), got {reregistrations}")
    if e.recommendation is not None:
        advice = (log.recommendation or {}).get("advice", "")
        has = bool(log.recommendation) and "stands where both paths are reachable" not in advice
        if has != e.recommendation:
            problems.append("expected a placement recommendation, none was made" if e.recommendation
                            else f"a placement recommendation was made: {advice}")
    return got, problems, figures


def _plan_settings(sc: Scenario) -> Any:
    """The planner's defaults with what the scenario's ``plan:`` sets."""
    from twinsim.planning.settings import PlanSettings

    return PlanSettings(**(sc.plan.model_dump(exclude_none=True) if sc.plan else {}))


def run_scenario(sc: Scenario, out: Path,
                 prepare: Callable[[Any], None] | None = None) -> ScenarioResult:
    """``prepare(rehearsal)``: a test's hook before the run (e.g. to disable an interlock and see the scenario fail)."""
    from twinsim.evaluation.placement_truth import SimVerifier
    from twinsim.hal.rig import SimRig, load_rig
    from twinsim.procedure.rehearsal import RehearsalSettings
    from twinsim.recon.fit import FitSettings
    from twinsim.rigs.open_rig import new_rehearsal, open_rig
    from twinsim.scenario.faults import FaultInjector
    from twinsim.twin.calibration_set import load_calibration

    t0 = time.perf_counter()
    rig = load_rig(sc.rig)
    if not isinstance(rig, SimRig):
        raise ValueError(f"scenario {sc.name}: {sc.rig} is a lab rig; scenarios run in the simulated room")
    own_room = sc.scene is None or (rig.scene is not None and sc.scene == rig.scene.resolve())
    rig = rig.model_copy(update={"seed": sc.seed, **({"scene": sc.scene} if sc.scene else {})})
    # The rig's calibration belongs to its room (any seed: the room is the same, only noise differs).
    cal = load_calibration(rig.calibration) if own_room and rig.calibration and rig.calibration.is_file() else None
    fit = FitSettings(iterations=sc.reconstruction.iterations, restarts=sc.reconstruction.restarts) if sc.reconstruction else None
    expected = describe_expectation(sc)
    with open_rig(rig, progress=False) as dev:
        dev.operator.click_sigma_mm = sc.click_noise_mm
        faults = FaultInjector(dev, list(sc.faults))
        try:
            settings = RehearsalSettings(level=sc.level, views=faults.views(_views(sc)), seed=sc.seed, fit_settings=fit,
                                         plan=_plan_settings(sc))
            faults.before()
            r = new_rehearsal(dev, out, settings, cal, SimVerifier(dev, sc.level or dev.target_level), progress=False)
            r.log.on_step = faults.on_step
            r.log.meta["scenario"] = {"name": sc.name, "file": str(sc.path) if sc.path else None, "expected": expected}
            if prepare is not None:
                prepare(r)
            record = r.run()
        finally:
            faults.close()
    log = record.log
    got, problems, figures = judge(sc, log, record.placed, record.reregistrations)
    problems += [f"the {k} fault never took effect (its trigger never came)" for k in faults.never_fired()]
    return ScenarioResult(sc, expected, got, not problems, problems, figures, faults.summary(),
                          log.meta.get("report_page"), time.perf_counter() - t0)


def scenario_state(context: dict[str, Any]) -> dict[str, Any]:
    """Nothing shared between scenarios: each builds its own room, with its own faults."""
    return context


def scenario_case(context: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario file run and judged (a case of :func:`twinsim.bench.runner.run_cases`): its result as a dict."""
    import contextlib

    from twinsim.logs import quiet
    from twinsim.scenario.schema import load_scenario

    sc = load_scenario(spec["file"])
    with contextlib.nullcontext() if context.get("_verbose") else quiet("twinsim.procedure"):
        return run_scenario(sc, Path(spec["out"])).to_dict()
