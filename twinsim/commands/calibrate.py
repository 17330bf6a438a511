"""``twinsim calibrate [all | chain | carm]``: the calibration chain and the C-arm calibration through the HAL."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _carm_calibration_rows(run: object) -> list[list[object]]:
    c = run.result
    sd = c.parameter_sd
    return [["C-arm: bead phantom, " + f"{len(run.views)} views", f"SDD {c.sdd_mm:.1f} mm (sd {sd['sdd_mm']:.1f}), principal point "
             f"{np.round(c.principal_offset_mm, 2).tolist()} mm, T_marker_source (sd {sd['translation_mm']:.1f} mm / "
             f"{sd['rotation_deg']:.2f} deg)", f"{c.residual_px_rms:.2f} px RMS", c.n_points]]


def cmd_calibrate(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime

    from twinsim.hal.rig import LabRig, load_rig
    from twinsim.report import table
    from twinsim.rigs.open_rig import open_rig
    from twinsim.tracking.calibration import CalibrationError
    from twinsim.twin.calibration_set import load_calibration, save_calibration
    from twinsim.workflows.calibration import SessionSettings, run_calibration
    from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom

    step = args.step
    rig = load_rig(args.rig)
    out = Path(args.out) if args.out else (rig.calibration or Path("out/calibration.json"))
    seed = args.seed if args.seed is not None else getattr(rig, "seed", 0)
    settings = SessionSettings(seed=seed)
    if args.speed_factor is not None:
        settings = dataclasses.replace(settings, speed_factor=args.speed_factor)
    previous = load_calibration(out) if step == "carm" else None  # the C-arm step adds to an existing file
    with open_rig(rig, progress=None) as dev:
        if step in ("carm", "all") and dev.carm_phantom is None:
            raise CalibrationError(f"rig {rig.name!r} names no C-arm bead phantom (carm.phantom in the rig file)")
        cal = previous or run_calibration(dev.arm, dev.tracker, dev.model, dev.operator, dev.registration, settings, progress=None)
        carm_run = (calibrate_carm_with_phantom(dev.carm, dev.tracker, dev.carm_phantom, operator=dev.operator)
                    if step in ("carm", "all") else None)
    if carm_run is not None:
        cal.carm = carm_run.result
        cal.residuals["carm"] = {"rms_px": carm_run.result.residual_px_rms, "views": carm_run.views, "skipped": carm_run.skipped,
                                 "beads": carm_run.result.n_points}
    elif step == "chain" and out.is_file():
        try:
            cal.carm = load_calibration(out).carm  # the C-arm's calibration does not depend on the chain: keep it
        except ValueError:
            pass
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if previous is None:
        cal.meta = {"rig": rig.name, "rig_kind": rig.kind, "scene": rig.scene.name if rig.scene else "default.yaml", "seed": seed,
                    "created": now,
                    "tools": sorted(rig.tracker.tools) if isinstance(rig, LabRig) else sorted(dev.room.config.markers)}
    if carm_run is not None:
        cal.meta["carm_calibrated"] = now
    rows = []
    if previous is None:
        r = cal.residuals
        rows += [
            ["pointer pivot", f"tip {np.round(cal.pointer_tip_mm, 2).tolist()}", f"{r['pointer_pivot']['rms_mm']:.3f} mm RMS", r["pointer_pivot"]["poses"]],
            ["needle-guide tip pivot (tracker)", f"tip {np.round(cal.needle_tip_mm, 2).tolist()}", f"{r['needle_tip_pivot']['rms_mm']:.3f} mm RMS", r["needle_tip_pivot"]["poses"]],
            ["needle-guide TCP pivot (robot)", f"TCP {np.round(cal.T_flange_tool[:3, 3], 2).tolist()}", f"{r['tcp_pivot']['rms_mm']:.3f} mm RMS", r["tcp_pivot"]["poses"]],
            ["needle-guide axis (rod pivots)", f"axis {np.round(cal.needle_axis, 4).tolist()} in its marker; "
             f"{r['needle_axis']['tilt_from_flange_z_deg']:.2f} deg off the flange z", f"{r['axis_rod_pivot']['rms_mm']:.3f} / "
             f"{r['axis_rod_tcp_pivot']['rms_mm']:.3f} mm RMS; rod {r['needle_axis']['rod_length_measured_mm']:.2f} mm",
             r["axis_rod_pivot"]["poses"]],
            ["hand-eye AX=XB", "T_flange_marker", f"{r['hand_eye']['rms_mm']:.3f} mm, {r['hand_eye']['rms_deg']:.3f} deg", r["hand_eye"]["poses"]],
            ["robot-world AX=ZB", "T_ref_base", f"{r['robot_world']['rms_mm']:.3f} mm, {r['robot_world']['rms_deg']:.3f} deg", r["robot_world"]["poses"]],
            ["paired points", "T_ref_ct (initial)", f"FRE {r['paired_point']['fre_mm']:.3f} mm (expected {r['paired_point']['expected_fre_mm']:.2f}), "
             f"predicted TRE {r['paired_point']['predicted_tre_at_target_mm']:.2f} mm", r["paired_point"]["tracked"]],
            ["surface ICP", "T_ref_ct", f"{r['surface']['rms_mm']:.3f} mm RMS, {100 * r['surface']['inlier_fraction']:.0f} % within 2 mm", r["surface"]["points"]],
        ]
    if carm_run is not None:
        rows += _carm_calibration_rows(carm_run)
        if carm_run.skipped:
            print("C-arm views skipped: " + "; ".join(f"{k}: {v}" for k, v in carm_run.skipped.items()))
    print(table(["calibration", "result", "residual", "poses/points"], rows))
    print(f"wrote {save_calibration(cal, out)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("calibrate", help="run the calibration chain on a rig (simulated room or lab) and write its calibration file",
                       description="Pointer pivot, needle-guide tip pivot (tracker and robot TCP), hand-eye AX=XB and "
                                   "robot-world AX=ZB, paired-point (FRE, predicted TRE) and surface registration of the "
                                   "patient, through the hardware abstraction layer: tracker frames and joint readings from the "
                                   "rig's devices; the human steps go through its operator (simulated, or prompted in the terminal). "
                                   "Then the C-arm: a tracked bead phantom at several C-arm poses gives its intrinsics and "
                                   "marker-to-source transform. Writes a twinsim-calibration/1 JSON file with every residual. "
                                   "With no step: all.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--rig", help="rig file (default: hardware/sim.yaml, the simulated room)")
    common.add_argument("-o", "--out", help="calibration file (default: the rig's 'calibration' entry, else out/calibration.json)")
    common.add_argument("--seed", type=int, default=None, help="sim rigs: tracker noise and motion seed (default: the rig's)")
    common.add_argument("--speed-factor", type=float, default=None,
                        help="fraction of the arm's velocity/acceleration limits (default 0.2)")
    steps = c.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, help_ in STEPS.items():
        steps.add_parser(name, parents=[common], help=help_).set_defaults(func=cmd_calibrate)


STEPS = {"all": "the chain, then the C-arm (the default: `twinsim calibrate --rig F` is `twinsim calibrate all --rig F`)",
         "chain": "pivots, hand-eye, registration (keeps the file's C-arm calibration)",
         "carm": "the C-arm alone, with the bead phantom, added to the existing file"}
