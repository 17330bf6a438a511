"""``twinsim scenario run FILE...`` and ``twinsim scenario check FILE...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

DESCRIPTION = """\
run: each scenario is a rehearsal in the simulated room with faults put in (occlusion, patient
motion, a colliding C-arm view, an unreachable target, a robot reflex, a damaged X-ray, missing
landmarks, a silent tracker). Prints a table (scenario, expected, got, pass/fail, figures),
writes scenarios.json and each run's report under -o. Exits 1 when any scenario does not meet
its expectation, 2 when a file is not a valid scenario.
check: validate the files only (a misspelt key is an error).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenario", help="scripted rehearsals with fault injection: run or check scenario files",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("files", nargs="+", help="scenario YAML files (twinsim-scenario/1)")
    r = actions.add_parser("run", parents=[files], help="run the scenarios and judge each against its expectation")
    r.add_argument("-o", "--out", default="out/scenarios", help="output folder (default out/scenarios)")
    r.add_argument("--ci", action="store_true", help="run only the scenarios marked ci: true (the fast ones)")
    r.add_argument("-v", "--verbose", action="store_true", help="print each step of each rehearsal (serial runs only)")
    from twinsim.commands.bench import add_runner_arguments

    add_runner_arguments(r)
    r.set_defaults(func=cmd_scenario)
    c = actions.add_parser("check", parents=[files], help="validate the files only (a misspelt key is an error)")
    c.set_defaults(func=cmd_scenario)


def _figures(fig: dict) -> str:
    keys = [k for k in fig if k.endswith(("_tip_mm", "_axis_deg"))]
    out = [f"{k.replace('_mm', '').replace('_deg', '')} {fig[k]:.2f}" for k in keys]
    if fig.get("reregistrations"):
        out.append(f"re-registered {fig['reregistrations']}x")
    out.append(f"{fig.get('motions_sent', 0)} motions")
    if fig.get("cannula_mm"):
        out.append(f"cannula {fig['cannula_mm']:g} mm")
    return ", ".join(out)


def cmd_scenario(args: argparse.Namespace) -> int:
    from twinsim.report import table, write_json
    from twinsim.scenario.schema import ScenarioFileError, load_scenario

    scenarios, bad = [], []
    for f in args.files:
        try:
            scenarios.append(load_scenario(f))
        except ScenarioFileError as exc:
            bad.append(str(exc))
    for b in bad:
        print(f"twinsim scenario: {b}", file=sys.stderr)
    if bad:
        return 2
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        print(f"twinsim scenario: two files share a name: {sorted({n for n in names if names.count(n) > 1})}", file=sys.stderr)
        return 2
    if args.action == "check":
        print(f"{len(scenarios)} scenario file(s) valid: {', '.join(names)}")
        return 0
    if args.ci:
        scenarios = [s for s in scenarios if s.ci]
    from twinsim.anatomy.wheel_data import content_digest
    from twinsim.bench.case_inputs import scene_digest
    from twinsim.bench.runner import CaseResult, run_cases
    from twinsim.commands.bench import runner_from
    from twinsim.hal.rig import load_rig
    from twinsim.scenario.runner import scenario_case, scenario_state

    out = Path(args.out)
    runner = runner_from(args, out / "records", "twinsim scenario run")
    rooms: dict[str, str] = {}

    def room_digest(sc: Any) -> str:
        """The scenario's room and patient by content (a changed room or CT runs the scenario again on --resume)."""
        scene = sc.scene or getattr(load_rig(sc.rig), "scene", None)
        key = str(scene)
        if key not in rooms:
            rooms[key] = scene_digest(scene)
        return rooms[key]

    specs = [{"name": sc.name, "file": str(sc.path), "digest": content_digest([Path(sc.path)]), "room": room_digest(sc),
              "out": str(out / sc.name)} for sc in scenarios]
    done: dict[int, dict] = {}

    def finished(res: CaseResult) -> None:
        rec = res.record or {"name": specs[res.index]["name"], "expected": "-", "got": f"error: {res.error}", "passed": False,
                             "problems": [f"the run failed twice: {res.error}"], "figures": {}, "wall_s": 0.0}
        done[res.index] = rec
        tqdm.write(f"{rec['name']}: {'PASS' if rec['passed'] else 'FAIL'}: {rec['got']} ({rec['wall_s']:.0f} s)"
                   + "".join(f"\n      - {p}" for p in rec["problems"]))
        write_json(out / "scenarios.json", {"format": "twinsim-scenario-run/1", "complete": False,
                                            "results": [done[i] for i in sorted(done)]})

    print(f"twinsim scenario run: {len(specs)} scenario(s), {runner.describe()}", flush=True)
    run = run_cases("scenario", scenario_case, scenario_state, {"_verbose": args.verbose}, specs, runner,
                    desc="scenarios", on_result=finished)
    results = [res.record or done[res.index] for res in run.results]
    write_json(out / "scenarios.json", {"format": "twinsim-scenario-run/1", "complete": True, "runner": run.summary(),
                                        "results": results})
    rows = [[r["name"], r["expected"], r["got"], "pass" if r["passed"] else "FAIL", _figures(r["figures"])] for r in results]
    print(table(["scenario", "expected", "got", "result", "figures"], rows))
    failed = [r["name"] for r in results if not r["passed"]]
    print(f"{len(results) - len(failed)} of {len(results)} scenarios met their expectation"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f". Wrote {out / 'scenarios.json'}")
    return 1 if failed else 0
