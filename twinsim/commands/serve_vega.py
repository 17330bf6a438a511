"""``twinsim serve-vega``: a sim rig's simulated Polaris Vega served over NDI's combined API."""

from __future__ import annotations

import argparse

import numpy as np

from twinsim.errors import UsageError


def cmd_serve_vega(args: argparse.Namespace) -> int:
    import json
    import signal

    from twinsim.hal.rig import SimRig, load_rig
    from twinsim.hal.sim.vega_peer import FIRMWARE_BX, FIRMWARE_TX, VegaPeer
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room

    rig = load_rig(args.rig)
    if not isinstance(rig, SimRig):
        raise UsageError(f"twinsim serve-vega: {args.rig} is a lab rig; serve-vega simulates a Vega from a sim rig's room")
    room = build_operating_room(rig.scene, progress=None)
    with room:
        vega = room_tracker(room, {"seed": rig.seed if args.seed is None else args.seed})
        log = open(args.log, "w") if args.log else None  # noqa: SIM115 (closed below, kept open while serving)

        class LoggingVega:
            """The room's tracker; every frame served is also written to the log (full precision)."""

            def get_tool_descriptions(self) -> tuple[list, list]:
                return vega.get_tool_descriptions()

            def get_frame(self) -> tuple:
                f = vega.get_frame()
                if log is not None:
                    log.write(json.dumps({"handles": list(map(int, f[0])), "frame_numbers": [float(x) for x in f[2]],
                                          "poses": [np.asarray(T, dtype=float).tolist() for T in f[3]]}).replace("NaN", "null") + "\n")
                    log.flush()
                return f

        peer = VegaPeer(LoggingVega(), args.host, args.port, FIRMWARE_BX if args.bx else FIRMWARE_TX)
        signal.signal(signal.SIGTERM, lambda *_: peer.kill())
        _, names = vega.get_tool_descriptions()
        print(f"serving the simulated Vega of {rig.name} ({room.config.path.name}) on {peer.address[0]}:{peer.address[1]}, "
              f"{'BX' if args.bx else 'TX'} frames; tools: {', '.join(map(str, names))}", flush=True)
        try:
            peer.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            peer.kill()
            if log is not None:
                log.close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("serve-vega", help="serve a sim rig's simulated Polaris Vega over NDI's combined API (loopback)",
                       description="Builds the rig's simulated room and answers NDI combined-API commands (INIT, PHSR, PHRQ, PVWR, "
                                   "PINIT, PENA, VER, TSTART, BX/TX, TSTOP) with its tracker's measurements, so "
                                   "scikit-surgerynditracker or any NDI client can be pointed at the twin. Tool files: "
                                   "twinsim's assets/markers/*.rom.")
    v.add_argument("--rig", help="a sim rig file (default: hardware/sim.yaml)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    v.add_argument("--port", type=int, default=8765, help="TCP port (default 8765, the Vega's)")
    v.add_argument("--bx", action="store_true", help="report a firmware that scikit-surgerynditracker polls with BX (binary, "
                                                      "float32 poses) instead of a Vega 008's, which it polls with TX (text, "
                                                      "0.01 mm; the default, read by the stock driver with any number of tools)")
    v.add_argument("--seed", type=int, default=None, help="tracker noise seed (default: the rig's)")
    v.add_argument("--log", help="also write every served frame (full precision) to this JSON-lines file")
    v.set_defaults(func=cmd_serve_vega)
