"""``twinsim xray``: the simulated C-arm's DRRs at given views, or tracked X-rays through a rig."""

from __future__ import annotations

import argparse
from pathlib import Path

from twinsim.commands.common import comma_list
from twinsim.errors import UsageError


def _tracked_xrays(args: argparse.Namespace, views: list) -> int:
    """``twinsim xray --geometry tracked``: through the rig, each image's geometry from the tracker and the C-arm calibration."""
    from twinsim.hal.interfaces import CArmView
    from twinsim.hal.rig import load_rig
    from twinsim.report import table
    from twinsim.rigs.open_rig import open_rig
    from twinsim.twin.calibration_set import load_calibration
    from twinsim.workflows.tracked_xray import acquire_tracked

    rig = load_rig(args.rig)
    cal_path = Path(args.calibration) if args.calibration else (rig.calibration or Path("out/calibration.json"))
    cal = load_calibration(cal_path)
    if cal.carm is None:
        raise UsageError(f"twinsim xray: {cal_path} has no C-arm calibration; run `twinsim calibrate carm` first")
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
        views = [parse_view(v) for v in comma_list(args.views, "--views", "xray")]
    except ValueError as exc:
        raise UsageError(f"twinsim xray: {exc}") from exc
    if not views:
        raise UsageError("twinsim xray: --views needs at least one view")
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("xray", help="simulated C-arm: DRRs of the patient at given views, with geometry sidecars",
                       description="Turns the scene's C-arm to each view, renders a DRR of the patient CT (nanodrr), "
                                   "writes a 16-bit PNG + JSON sidecar (intrinsics, source pose, 3x4 projection matrix) "
                                   "per view and a contact sheet with the target vertebra's projected outline.")
    x.add_argument("--views", default="AP,LAT", help="comma-separated views: AP, LAT, RLAT, LAO30, RAO45, CRAN20, LAO25CAUD10 "
                   "(default AP,LAT)")
    x.add_argument("-o", "--out", default="out/xray", help="output folder (default: out/xray)")
    x.add_argument("--size", type=int, default=512, choices=[256, 512, 1024], help="image size in pixels (default 512)")
    x.add_argument("--noise", choices=["none", "realistic"], default="realistic", help="detector model (default realistic)")
    x.add_argument("--seed", type=int, default=0, help="noise seed of the first view (default 0)")
    x.add_argument("--samples", type=int, default=400, help="samples per ray (default 400)")
    x.add_argument("--level", help="vertebra to outline (default: the scene's target)")
    x.add_argument("--scene", help="scene YAML (default: the default room)")
    x.add_argument("--geometry", choices=["truth", "tracked"], default="truth",
                   help="truth (default): each sidecar holds the DRR's exact geometry in ct (simulation and evaluation only); "
                        "tracked: through the rig (--rig), the geometry a rig would have: the C-arm calibration composed "
                        "with the tracked C-arm marker, in ref (needs `twinsim calibrate carm`)")
    x.add_argument("--rig", help="--geometry tracked: rig file (default: hardware/sim.yaml)")
    x.add_argument("--calibration", help="--geometry tracked: calibration file (default: the rig's)")
    x.set_defaults(func=cmd_xray)
