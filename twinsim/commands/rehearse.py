"""``twinsim rehearse`` (and ``twinsim`` with no arguments): the procedure on a rig, its report in ``out/rehearsal``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twinsim.errors import UsageError
from twinsim.planning.settings import PlanSettings, PlanSettingsError

DESCRIPTION = """\
Rehearse a vertebroplasty on a rig (the simulated room by default): calibration (the rig's file,
checked against the room, or measured now), two tracked X-rays, landmarks (the operator's, or
--clicks), reconstruction, both paths planned and checked, the patient envelope touched with the
pointer, reach (with a placement recommendation when a path is out of reach), each needle guide
brought onto its path through motions checked in the twin first, the robot home, and on a
simulated rig verification in the true anatomy with confirmation X-rays. Writes rehearsal.json
(every step, its timings and figures), rehearsal.png (one page) and each step's files. Exits 0
when both guides were placed, 1 when the procedure stopped (the reason is in the report).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rehearse", help="the procedure end to end: two X-rays to both needle guides placed; report in out/rehearsal",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_rehearse)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene",
                   help="scene YAML for a simulated rig (default: the rig's, scenarios/rooms/default.yaml); a scripted "
                        "scenario with faults is `twinsim scenario run`")
    p.add_argument("--rig", help="rig file (default: hardware/sim.yaml, the simulated room)")
    p.add_argument("--level", help="target vertebra (default: the scene's)")
    p.add_argument("--views", default="AP,RAO60", help="the two X-ray views, comma-separated (default AP,RAO60: where the "
                                                      "default room's tracker sees the C-arm's marker)")
    p.add_argument("--clicks", help="twinsim-landmarks/1 file with the landmarks in both X-rays (default: the operator marks them)")
    plan = PlanSettings()
    p.add_argument("--cannula-mm", type=float, default=plan.cannula_diameter_mm,
                   help=f"the cannula's diameter for the plan's safety check and the verification (default "
                        f"{plan.cannula_diameter_mm:g}: seed 000's cylinder; an 11G needle is about 3)")
    p.add_argument("--margin-mm", type=float, default=plan.margin_mm,
                   help=f"clearance the plan must keep beyond the cannula's radius (default {plan.margin_mm:g})")
    p.add_argument("--recalibrate", action="store_true", help="measure the calibration now even if the rig has a file")
    p.add_argument("--seed", type=int, default=None, help="seed of the simulated rig (default: the rig file's)")
    p.add_argument("-o", "--out", default="out/rehearsal", help="output folder (default out/rehearsal)")
    p.add_argument("--view", action="store_true",
                   help="serve the twin's web view while the procedure runs (see `twinsim view`); it stays up after the "
                        "procedure until Ctrl-C when run from a terminal (as does --igtl)")
    from twinsim.commands.view import add_view_arguments

    add_view_arguments(p)


def _views(spec: str) -> tuple:
    from twinsim.hal.interfaces import CArmView
    from twinsim.imaging.views import parse_view

    names = [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) != 2:
        raise UsageError(f"twinsim rehearse: --views needs exactly two views, got {names}")
    views = [parse_view(n) for n in names]
    return tuple(CArmView(v.name, v.lao_deg, v.cranial_deg) for v in views)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from twinsim.hal.rig import SimRig, load_rig
    from twinsim.procedure.rehearsal import RehearsalSettings
    from twinsim.rigs.open_rig import new_rehearsal, open_rig
    from twinsim.twin.calibration_set import load_calibration

    try:
        plan = PlanSettings(cannula_diameter_mm=args.cannula_mm, margin_mm=args.margin_mm)
    except PlanSettingsError as e:
        raise UsageError(f"twinsim rehearse: {e}") from None
    rig = load_rig(args.rig)
    own_scene = True
    if args.scene:
        if not isinstance(rig, SimRig):
            raise UsageError("twinsim rehearse: --scene sets the simulated room; a lab rig's room is the real one")
        own_scene = Path(args.scene).resolve() == (rig.scene.resolve() if rig.scene else None)
        rig = rig.model_copy(update={"scene": Path(args.scene).resolve()})
    if args.seed is not None and isinstance(rig, SimRig):
        own_scene = own_scene and args.seed == rig.seed
        rig = rig.model_copy(update={"seed": args.seed})
    # The rig's calibration belongs to its own room and seed; another scenario is calibrated anew.
    cal = None
    if rig.calibration is not None and rig.calibration.is_file() and own_scene and not args.recalibrate:
        cal = load_calibration(rig.calibration)
    settings = RehearsalSettings(level=args.level.upper() if args.level else None, views=_views(args.views),
                                 clicks_file=Path(args.clicks) if args.clicks else None, seed=getattr(rig, "seed", 0),
                                 plan=plan)
    out = Path(args.out)
    with open_rig(rig, progress=None) as dev:
        verify = None
        if dev.room is not None:
            from twinsim.evaluation.placement_truth import SimVerifier

            verify = SimVerifier(dev, settings.level or dev.target_level)
        print(f"twinsim rehearse: {rig.name} ({rig.kind}), level {settings.level or dev.target_level}, views "
              f"{', '.join(v.name for v in settings.views)}; calibration {'from ' + str(rig.calibration) if cal else 'measured now'}")
        stay = (args.view or args.igtl) and sys.stdin.isatty()
        # Staying up with the view, the twin's world stays too: the view's virtual guide is checked in it.
        r = new_rehearsal(dev, out, settings, cal, verify, keep_twin=bool(stay and args.view))
        view = None
        if args.view or args.igtl:
            from twinsim.commands.view import attach_igtl, open_view

            view = open_view(args.host, args.port)  # the OpenIGTLink server is fed by the view's draws
            attach_igtl(view, args.igtl_port if args.igtl else None)
            view.follow(r.recorder)
            if args.view:
                print(f"twinsim rehearse: the twin's view is at {view.url}", flush=True)
                if view.attach_operator(dev.operator) is not None:
                    print("twinsim rehearse: each step a person does is asked in the view too (Operator panel)", flush=True)
                from twinsim.evaluation.teaching_truth import teaching_truth
                from twinsim.hal.ports import callable_port

                truth = teaching_truth(dev, settings.level or dev.target_level)  # None on a lab rig
                if truth is not None:
                    view.attach_truth(callable_port(truth))
        try:
            record = r.run()
        except BaseException:
            r.close()
            raise
        finally:
            if view is not None and not stay:
                view.close()
        _print_outcome(record)
        if stay:
            from twinsim.commands.view import serve
            from twinsim.procedure.rehearsal import RehearsalError

            try:
                if args.view:
                    try:
                        view.attach_manipulator(r.manipulator(), r.guide_poses())
                        print("the view's 'Move the guide' panel moves the robot to a pose checked in the twin", flush=True)
                    except RehearsalError as exc:
                        print(f"no virtual guide in the view: {exc}", flush=True)
                print(f"the view stays up at {view.url}: Ctrl-C closes it", flush=True)
                serve(None)
            finally:
                view.close()
                r.close()
    return 0 if record.succeeded else 1


def _print_outcome(record) -> None:  # noqa: ANN001 (a RehearsalRecord)
    from twinsim.report import table

    log = record.log
    rows = [[i + 1, s.title, s.state, f"{s.seconds:.1f}"] for i, s in enumerate(log.steps)]
    print(table(["#", "step", "state", "s"], rows))
    for side, g in record.placed.items():
        if g.truth:
            t = g.truth
            print(f"{side} guide: needle tip {t['tip_error_mm']:.2f} mm from the planned target, axis {t['axis_error_deg']:.2f} deg; "
                  f"{'BREACH' if t['breach'] else 'no breach'} of the true bone (clearance {t['clearance_mm']:.2f} mm)")
    m = log.meta["motions"]
    print(f"motions: {m['sent']} sent, each after a passed check; {m['refused']} refused before motion")
    if log.recommendation:
        print(f"placement: {log.recommendation.get('advice')}")
    print(f"outcome: {log.summary}")
    print(f"wrote {log.path} and {log.meta.get('report_page', '(no page: ' + log.meta.get('report_page_error', '') + ')')}")

