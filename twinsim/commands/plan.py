"""``twinsim plan`` (and ``twinsim reconstruct --plan``): plan both paths, write the plan file and its picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twinsim.commands.common import comma_floats, comma_list
from twinsim.errors import UsageError
from twinsim.planning.settings import REFINE_STARTS, PlanSettings
from twinsim.report import table

if TYPE_CHECKING:
    from twinsim.planning.from_reconstruction import FittedVertebra
    from twinsim.planning.planner import VertebraPlan


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    d = PlanSettings()
    p.add_argument("--cannula-mm", type=float, default=d.cannula_diameter_mm,
                   help=f"cannula diameter (default {d.cannula_diameter_mm:g} mm, as seed 000; an 11G needle is ~3 mm)")
    p.add_argument("--margin-mm", type=float, default=d.margin_mm,
                   help=f"clearance required beyond the cannula's radius (default {d.margin_mm:g} mm)")
    p.add_argument("--convergence-deg", default=f"{d.convergence_deg[0]:g},{d.convergence_deg[1]:g}", metavar="MIN,MAX",
                   help=f"allowed angle between the two paths in the axial plane (default {d.convergence_deg[0]:g},{d.convergence_deg[1]:g})")
    p.add_argument("--no-refine", action="store_true", help="transfer the model's paths only (no refinement)")
    p.add_argument("--refine-starts", type=int, choices=REFINE_STARTS, default=d.refine_starts,
                   help=f"refinement from the transferred path only (1) or also from it shifted and tilted each way "
                        f"(9; default {d.refine_starts})")


def settings_from(args: argparse.Namespace) -> PlanSettings:
    """The plan settings the options give; out-of-range values are refused by PlanSettings itself."""
    convergence = comma_floats(args.convergence_deg, "--convergence-deg", "plan")
    if len(convergence) != 2:
        raise UsageError(f"twinsim plan: --convergence-deg takes MIN,MAX, got {args.convergence_deg!r}")
    return PlanSettings(cannula_diameter_mm=args.cannula_mm, margin_mm=args.margin_mm,
                        convergence_deg=convergence, refine=not args.no_refine,
                        refine_starts=args.refine_starts)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan both transpedicular paths on a reconstruction; plan JSON + picture",
                       description="Transfers the shape model's left and right paths onto the fitted vertebra, refines them "
                                   "for the largest clearance to the cortex (tip in the anterior third, short of the anterior "
                                   "cortex, convergence within limits) and checks a cannula of the given diameter against the "
                                   "fitted surface. Writes <LEVEL>_plan.json (twinsim-plan/1) and <LEVEL>_plan.png (cannulas as "
                                   "steel in both X-rays, 3D views). Exits 1 when a path is refused, with its reason.")
    p.add_argument("--reconstruction", required=True, help="twinsim-reconstruction/1 JSON from `twinsim reconstruct`")
    p.add_argument("--images", help="the two X-rays, comma-separated (default: those named in the reconstruction file)")
    p.add_argument("--model", help="shape model name or .npz (default: the one named in the reconstruction file)")
    p.add_argument("-o", "--out", default="out/plan", help="output folder (default out/plan)")
    add_settings_arguments(p)
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from twinsim.planning.from_reconstruction import load_reconstruction
    from twinsim.shape.model import load_model

    fitted = load_reconstruction(args.reconstruction, load_model(args.model) if args.model else None)
    if args.images:
        fitted.image_paths = [Path(p) for p in comma_list(args.images, "--images", "plan")]
    return plan_and_write(fitted, settings_from(args), Path(args.out), {"reconstruction": str(args.reconstruction)})


def plan_and_write(fitted: FittedVertebra, settings: PlanSettings, out: Path, source: dict | None = None) -> int:
    from twinsim.imaging.acquisition import AcquisitionError, load_acquisition
    from twinsim.planning.picture import write_plan_picture
    from twinsim.planning.plan_file import save_plan
    from twinsim.planning.planner import plan_vertebra

    plan = plan_vertebra(fitted.vertices_mm, fitted.faces, fitted.landmarks_mm, settings, frame=fitted.frame)
    level = fitted.level or "vertebra"
    acqs = []
    try:
        acqs = [load_acquisition(p) for p in fitted.image_paths]
    except AcquisitionError as exc:
        print(f"twinsim plan: warning: X-rays not drawn ({exc}); pass them with --images", file=sys.stderr)
    other = sorted({a.geometry.frame for a in acqs} - {fitted.frame})
    if other:
        print(f"twinsim plan: warning: X-rays not drawn: their geometry is in frame {', '.join(other)}, the reconstruction in "
              f"{fitted.frame}", file=sys.stderr)
        acqs = []
    src = {**(source or {}), "model": fitted.model_name, "images": [str(p) for p in fitted.image_paths]}
    json_path = save_plan(out / f"{level}_plan.json", plan, level, src)
    picture = write_plan_picture(out / f"{level}_plan.png", plan, fitted.vertices_mm, fitted.faces, fitted.landmarks_mm, acqs,
                                 title=f"{level} plan ({'both paths safe' if plan.safe else 'REFUSED'}): {settings.cannula_diameter_mm:g} mm "
                                       f"cannula on the fitted {fitted.model_name} model, frame {fitted.frame}")
    print_plan(plan, level)
    print(f"wrote {json_path} and {picture}")
    return 0 if plan.safe else 1


def print_plan(plan: VertebraPlan, level: str) -> None:
    rows = [[side, p.method, f"{p.min_clearance_mm:.2f} ({p.clearance_region}, {p.nearest_wall})", f"{p.length_mm:.1f}",
             f"{p.medial_angle_deg:.1f} / {p.tilt_deg:+.1f}", f"{p.tip_to_cortex_mm:.1f}", "safe" if p.safe else "REFUSED"]
            for side, p in plan.paths.items()]
    print(table(["path", "method", "clearance mm (where)", "length mm", "medial / tilt deg", "tip to cortex mm", "verdict"], rows))
    print(f"{level}: convergence {plan.convergence_deg:.1f} deg; required clearance {plan.settings.required_clearance_mm:.2f} mm "
          f"({plan.settings.cannula_diameter_mm:g} mm cannula)")
    for side, p in plan.paths.items():
        for r in p.reasons:
            print(f"REFUSED {side} path: {r}")
