"""``twinsim view``: the twin in a web browser, live on a rig or replaying a finished rehearsal."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from twinsim.errors import UsageError

DESCRIPTION = """\
A web view of the twin (viser) at http://HOST:PORT: both robots from their joint readings, every
tracked tool from the tracker (grey and labelled missing when the tracker does not see it), the
reconstructed vertebra, both planned paths, the patient envelope, the table, the C-arm and the
tracker's measurement volume, each layer switchable, with the procedure's steps beside them.

  twinsim view --replay out/rehearsal     a finished rehearsal, with a time slider
  twinsim view [--rig F]                  live: the rig's robot and tracked tools as they are now
  twinsim rehearse --view                 the rehearsal with the view attached

It binds to loopback unless --host says otherwise. Ctrl-C closes it.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="the twin in a web browser: live on a rig, or replaying a rehearsal",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replay", metavar="DIR", help="a rehearsal's output folder (its twin_timeline.npz) to play back")
    p.add_argument("--rig", help="live: rig file (default: hardware/sim.yaml, the simulated room)")
    add_view_arguments(p)
    p.add_argument("--for-s", type=float, default=None,
                   help="serve this many seconds, then exit (default: until Ctrl-C; a script's or test's bound)")
    p.set_defaults(func=cmd_view)


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    p.add_argument("--igtl", action="store_true",
                   help="also serve the twin over OpenIGTLink on 127.0.0.1 (--igtl-port), for 3D Slicer's OpenIGTLinkIF: "
                        "tracked tools as <Tool>ToReference, the vertebra and paths as polydata, the X-rays")
    p.add_argument("--igtl-port", type=int, default=18944, help="the OpenIGTLink port (default 18944, the protocol's own)")


def attach_igtl(view, port: int | None) -> None:  # noqa: ANN001 (a TwinView)
    """The OpenIGTLink server beside the view, fed by every draw and closed with it."""
    if port is None:
        return
    from twinsim.view.igtl_bridge import IgtlBridge, IgtlError

    try:
        bridge = IgtlBridge(port)
    except IgtlError as exc:
        view.close()
        raise UsageError(f"twinsim: --igtl: {exc}") from None
    view.on_show.append(bridge.show)
    view.on_close.append(bridge.close)
    print(f"twinsim: OpenIGTLink on 127.0.0.1:{port} (3D Slicer: OpenIGTLinkIF, client, that port)", flush=True)


def open_view(host: str, port: int):  # noqa: ANN201 (a TwinView; viser is imported only here)
    from twinsim.view.web_view import TwinView

    if not 0 < port < 65536:
        raise UsageError(f"twinsim view: --port must be 1-65535, got {port}")
    try:
        return TwinView(host, port)
    except OSError as exc:
        raise UsageError(f"twinsim view: cannot serve on {host}:{port} ({exc.strerror or exc}); choose another --port") from None


def serve(for_s: float | None, tick: Callable[[], object] | None = None, period_s: float = 0.2) -> None:
    """Until Ctrl-C, or ``for_s`` seconds; ``tick`` every ``period_s`` meanwhile."""
    t_end = None if for_s is None else time.monotonic() + for_s
    try:
        while t_end is None or time.monotonic() < t_end:
            if tick is not None:
                tick()
            time.sleep(period_s)
    except KeyboardInterrupt:
        pass


def cmd_view(args: argparse.Namespace) -> int:
    if args.replay and args.rig:
        raise UsageError("twinsim view: --replay plays a recording; --rig shows a rig live: give one of them")
    if args.replay:
        from twinsim.view.timeline import load_timeline

        timeline = load_timeline(Path(args.replay))  # refused before anything is served
        view = open_view(args.host, args.port)
        attach_igtl(view, args.igtl_port if args.igtl else None)
        try:
            view.replay(timeline)
            print(f"twinsim view: replaying {args.replay} ({len(timeline)} samples at {timeline.rate_hz:g} Hz of tracker time, "
                  f"{len(timeline.events)} step events) at {view.url}; Ctrl-C closes it", flush=True)
            serve(args.for_s)
        finally:
            view.close()
        return 0
    return _live(args)


def _live(args: argparse.Namespace) -> int:
    """The rig as it stands: joints and tracked tools at the view's rate, the calibration from the rig's file."""
    from twinsim.hal.rig import load_rig
    from twinsim.rigs.open_rig import open_rig
    from twinsim.twin.calibration_set import load_calibration
    from twinsim.view.recorder import TwinRecorder, layers_of

    rig = load_rig(args.rig)
    if rig.calibration is None or not rig.calibration.is_file():
        raise UsageError(f"twinsim view: the rig {rig.name} has no calibration file ({rig.calibration}); the view places "
                         "the robot through it: run `twinsim calibrate` first")
    cal = load_calibration(rig.calibration)
    view = open_view(args.host, args.port)
    attach_igtl(view, args.igtl_port if args.igtl else None)
    try:
        with open_rig(rig, progress=False) as dev:
            d = dev.devices
            rec = TwinRecorder(d.tracker, d.arm, d.room_model, rig=rig.name)
            for name, arrays in layers_of(cal, None, None, d.room_model).items():
                rec.timeline.set_layer(name, arrays)
            view.follow(rec)
            print(f"twinsim view: {rig.name} ({rig.kind}) live at {view.url}; Ctrl-C closes it", flush=True)
            serve(args.for_s, rec.tracker.get_frame, 1.0 / rec.timeline.rate_hz)
    finally:
        view.close()
    print(f"twinsim view: closed after {len(rec.timeline)} samples", file=sys.stderr)
    return 0
