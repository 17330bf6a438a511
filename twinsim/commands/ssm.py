"""``twinsim ssm build | annotate | eval | show``: the vertebral shape models."""

from __future__ import annotations

import argparse
from pathlib import Path

from twinsim.commands.common import comma_list
from twinsim.errors import UsageError
from twinsim.paths import bundled, shared_data
from twinsim.shape.regions import MODEL_NAMES


def _models(args: argparse.Namespace) -> list[str]:
    names = comma_list(args.models, "--models", f"ssm {args.action}") or list(MODEL_NAMES)
    unknown = [m for m in names if m not in MODEL_NAMES]
    if unknown:
        raise UsageError(f"twinsim ssm {args.action}: unknown model(s) {unknown}; the models are {', '.join(MODEL_NAMES)}")
    return names


def cmd_build(args: argparse.Namespace) -> int:
    from twinsim.shape import pipeline

    data = Path(args.data) if args.data else shared_data()
    if data is None:
        raise UsageError("twinsim ssm build: give the raw shape data folder with --data DIR or TWINSIM_SHARED_DATA")
    return pipeline.build(data, Path(args.out) if args.out else bundled("assets") / "ssm", _models(args))


def cmd_annotate(args: argparse.Namespace) -> int:
    from twinsim.shape import pipeline

    return pipeline.reannotate(Path(args.out) if args.out else bundled("assets") / "ssm", _models(args))


def cmd_eval(args: argparse.Namespace) -> int:
    from twinsim.report import write_json
    from twinsim.shape import pipeline
    from twinsim.shape.regions import MODEL_LEVELS

    models, out = _models(args), Path(args.out)
    results = pipeline.evaluate(models, pipeline.example_vertebrae(sorted({lv for m in models for lv in MODEL_LEVELS[m]})))
    print(pipeline.format_eval(results))
    print(f"wrote {write_json(out / 'ssm_eval.json', results)} and {pipeline.plot_eval(results, out / 'ssm_eval.png')}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from twinsim.shape import pipeline

    out = Path(args.out)
    for name in _models(args):
        print(f"wrote {pipeline.show(name, out / f'ssm_{name}_modes.png')}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("ssm", help="vertebral shape models: build from raw meshes, re-annotate, evaluate, show",
                       description="The regional statistical shape models (T1-4, T5-8, T9-12, L1-5 and L1's own).")
    jobs = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("--models", help=f"comma-separated models (default all: {','.join(MODEL_NAMES)})")

    b = jobs.add_parser("build", parents=[models], help="build models from the raw shape data",
                        description="Template, rigid alignment (landmarks, ICP), coherent point drift, Procrustes, PCA, "
                                    "annotations (landmarks + transpedicular paths), from the raw meshes (about an hour "
                                    "on 2 cores for all five).")
    b.add_argument("--data", help="raw shape data folder (default: $TWINSIM_SHARED_DATA)")
    b.add_argument("-o", "--out", help="model folder (default: twinsim's own assets/ssm)")
    b.set_defaults(func=cmd_build)

    a = jobs.add_parser("annotate", parents=[models], help="recompute landmarks and paths of built models (no rebuild)")
    a.add_argument("-o", "--out", help="model folder (default: twinsim's own assets/ssm)")
    a.set_defaults(func=cmd_annotate)

    e = jobs.add_parser("eval", parents=[models], help="compactness, generalization, specificity, fit to the held-out CT",
                        description="Compactness, leave-one-person-out generalization, specificity and the fit to the "
                                    "example CT's vertebrae of each region (held out of every model); JSON + table + PNG.")
    e.add_argument("-o", "--out", default="out/ssm", help="output folder (default out/ssm)")
    e.set_defaults(func=cmd_eval)

    w = jobs.add_parser("show", parents=[models], help="mean +/- 2 SD along the first modes, one PNG per model")
    w.add_argument("-o", "--out", default="out/ssm", help="output folder (default out/ssm)")
    w.set_defaults(func=cmd_show)
