"""``twinsim reconstruct``: fit the vertebra's shape model to two X-rays; mesh, JSON and overlay."""

from __future__ import annotations

import argparse
from pathlib import Path

from twinsim.commands import plan as plan_command
from twinsim.commands.common import at_least, comma_list
from twinsim.errors import UsageError

FIT_RESTARTS = 2  # recon.fit.FitSettings().restarts, without importing torch to build the parser


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from twinsim.imaging.acquisition import load_acquisition
    from twinsim.imaging.landmarks_file import load_clicks
    from twinsim.recon.fit import FitSettings, default_model_name, reconstruct, save_reconstruction
    from twinsim.recon.overlay import write_overlay
    from twinsim.recon.similarity import LOSSES
    from twinsim.report import atomic_output, table
    from twinsim.shape.model import load_model

    images = comma_list(args.images, "--images", "reconstruct", count=2)
    at_least(args.click_sigma_mm, 0.0, "--click-sigma-mm", "reconstruct", strict=True)
    at_least(args.restarts, 0, "--restarts", "reconstruct")
    acqs = [load_acquisition(p) for p in images]
    clicks = load_clicks(args.landmarks, n_views=2)
    level = args.level.upper()
    model = load_model(args.model or default_model_name(level))
    try:
        iterations = tuple(int(x) for x in args.iterations.split(",")) if args.iterations else FitSettings().iterations
    except ValueError:
        raise UsageError(f"twinsim reconstruct: --iterations takes whole numbers, e.g. 60,50,30; got {args.iterations!r}") from None
    if len(iterations) != len(FitSettings().pyramid_mm) or min(iterations) < 1:
        raise UsageError(f"twinsim reconstruct: --iterations needs {len(FitSettings().pyramid_mm)} numbers >= 1, one per pyramid "
                         f"level; got {args.iterations!r}")
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
    save_reconstruction(stem.with_suffix(".json"), r, level, [Path(p).resolve() for p in images])
    write_overlay(out / f"{level}_overlay.png", acqs, r.initial_vertices_mm, r.vertices_mm, r.faces,
                  title=f"{level}: initial (yellow, dashed) vs fitted (red); model {model.name}, loss {r.loss_name}")
    print(table(["level", "model", "init", "landmarks", "loss (start -> fit)", "clicks RMS", "runs", "seconds"],
                [[level, model.name, r.initial.method, len(r.initial.landmarks), f"{r.initial_loss:.4f} -> {r.loss:.4f}",
                  f"{r.landmark_rms_sigma:.2f} SD", r.runs, f"{r.wall_s:.1f}"]]))
    check = r.initial.check
    if check is not None and check.correction:
        print(f"landmarks: {check.correction} (worst click {check.tried['as given']:.1f} SD as given, "
              f"{check.worst_sd:.1f} SD corrected; recorded in the reconstruction JSON)")
    print(f"wrote {stem}.ply, .stl, .json and {out / f'{level}_overlay.png'} (frame {r.frame}, mm)")
    if args.plan:
        from twinsim.commands.plan import plan_and_write, settings_from
        from twinsim.planning.from_reconstruction import FittedVertebra

        fitted = FittedVertebra.from_model(model, r.T_frame_model, r.coeffs_sd, level, r.frame, [Path(p) for p in images])
        return plan_and_write(fitted, settings_from(args), out, {"reconstruction": str(stem.with_suffix(".json"))})
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    rc = sub.add_parser("reconstruct", help="fit the vertebra shape model to two X-rays (pose + shape), write mesh, JSON, overlay",
                        description="Spine-DART-style reconstruction: 2D landmarks in both images are triangulated (DLT) and "
                                    "aligned to the model's (Procrustes) for the starting pose, then pose and shape are fitted by "
                                    "differentiable Gaussian splatting against both X-rays, coarse to fine. Images are twinsim-xray/1 "
                                    "acquisitions (16-bit PNG + JSON sidecar with the projection geometry; simulated or from a "
                                    "calibrated C-arm). Writes <LEVEL>_reconstruction.ply/.stl/.json and <LEVEL>_overlay.png.")
    rc.add_argument("--images", required=True, help="the two X-ray PNGs, comma-separated, each with its .json sidecar beside it")
    rc.add_argument("--landmarks", required=True, help="twinsim-landmarks/1 JSON: 2D landmarks per view, in the order of --images")
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
