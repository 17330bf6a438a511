"""The ``twinsim`` command. With no command (or only options) it rehearses the procedure: ``twinsim rehearse``.

Exit codes: 0 done; 1 the procedure or a check stopped safely (the reason is printed and in the
report); 2 bad input or configuration, printed in one line.
"""

from __future__ import annotations

import argparse
import sys

from twinsim.commands import (
    bench,
    calibrate,
    fetch_example,
    patient,
    plan,
    reconstruct,
    rehearse,
    scenario,
    scene,
    serve_vega,
    ssm,
    view,
    xray,
)
from twinsim.errors import TwinsimError
from twinsim.logs import configure

DESCRIPTION = """\
twinsim: a simulation-first digital twin for robot-assisted vertebroplasty.

Run with no command to rehearse a vertebroplasty on the example patient (same as `twinsim rehearse`):
two X-rays, reconstruction, plan, both needle guides placed through motions checked in the twin.
Exit codes: 0 done, 1 the procedure stopped safely (the reason is in the report), 2 bad input.
"""

# In the order `twinsim --help` lists them.
COMMANDS = (rehearse, view, scenario, scene, patient, fetch_example, xray, ssm, calibrate, serve_vega, reconstruct, plan, bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def _with_defaults(argv: list[str]) -> list[str]:
    """No command, or only options: the rehearsal. ``calibrate`` with no step: ``calibrate all``."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return ["rehearse", *argv]
    if argv[0] == "calibrate" and (len(argv) == 1 or argv[1] not in (*calibrate.STEPS, "-h", "--help")):
        return ["calibrate", "all", *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _with_defaults(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)  # an unknown command or option: argparse's one-line usage error, exit 2
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    configure()
    try:
        return int(args.func(args))
    except TwinsimError as exc:
        print(f"twinsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
