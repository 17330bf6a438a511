"""``twinsim bench ...``: the benchmarks' wiring; each benchmark lives in its own module here."""

from __future__ import annotations

import argparse
from pathlib import Path

from twinsim.evaluation.surroundings import SURROUNDINGS
from twinsim.planning import command as plan_command


def add_parser(sub: argparse._SubParsersAction) -> None:
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
                                   "truth (--seeds N from --seed). "
                                   "rehearse: seeded rehearsals of the whole procedure on random view pairs, clicks of 1 and 3 mm, "
                                   "and a 2D-GeoPlan row; success (both guides placed, breach-free in the true bone), tip and "
                                   "axis errors, motions refused, wall time per step, the collision check's speed. "
                                   "patients: the procedure (or, where a CT holds no room, reconstruction and plan) on "
                                   "every patient and target of a suite file (scenarios/patients/suite.yaml: the example CT, "
                                   "its 3 mm, cropped and heavier variants, tptbox's sample CT); stops before planning, "
                                   "success, success given a plan safe in the true bone, unchecked motions, tip and axis. "
                                   "envs: the gymnasium environments' step rates, scripted and random baselines' returns and "
                                   "success, panda-gym's PandaReach-v3 in the same run, and 2 AsyncVectorEnv workers vs 1 env.")
    b.add_argument("what", choices=["scene", "xray", "mapping", "recon", "plan", "hal", "carm", "rehearse", "envs", "patients"],
                   help="which benchmark")
    b.add_argument("-o", "--out", help="JSON output (default: out/bench_<what>.json)")
    b.add_argument("--scene", help="scene: scene YAML (default: scenarios/rooms/default.yaml)")
    b.add_argument("--cold-repeats", type=int, default=3, help="scene: cold builds (default 3)")
    b.add_argument("--warm-repeats", type=int, default=5, help="scene: warm builds (default 5)")
    b.add_argument("--ct", help="xray, recon, plan: CT NIfTI (default: the example patient)")
    b.add_argument("--labels", help="xray, recon, plan: label map NIfTI")
    b.add_argument("--label-table", help="xray, recon, plan: label table (CSV or JSON)")
    b.add_argument("--levels", help="recon, plan: comma-separated vertebrae (default L1,T12,T11; each with its regional model, and recon also with the L1 model beside it)")
    b.add_argument("--seeds", type=int, default=5, help="carm: how many seeds, from --seed (default 5)")
    b.add_argument("--pairs", type=int, default=None, help="recon, plan, rehearse, patients: random view pairs (default 20 per level; 10 with --geometry tracked or "
                        "for rehearse; 5 per target for patients)")
    b.add_argument("--click-sigma-mm", type=float, default=1.0,
                   help="recon, plan, patients: SD of the simulated clinician's click error at the vertebra, mm (default 1)")
    b.add_argument("--cases", help="recon: also save each level's AP+LAT images and clicks.json here (input for reconstruct); plan: every case's images, clicks and reconstruction JSON (input for `twinsim plan`)")
    b.add_argument("--reuse-cases", action="store_true",
                   help="plan: take each case's reconstruction from --cases where a previous run saved it (compare planner "
                        "settings without refitting)")
    b.add_argument("--surroundings", choices=SURROUNDINGS, default="ct",
                   help="plan: render the X-rays from the CT as it is (default), or with everything but the scored vertebra "
                        "replaced by uniform soft tissue or by air: an ablation that measures what the clutter around the "
                        "vertebra costs (not the clinical case; give each its own --cases DIR)")
    plan_command.add_settings_arguments(b)
    b.add_argument("--level", default="L1", help="xray: vertebra the C-arm is centred on (default L1)")
    b.add_argument("--repeats", type=int, default=3, help="xray: timed repeats after a warm-up (default 3)")
    b.add_argument("--no-reference", action="store_true", help="xray: skip diffdrr (ours only)")
    b.add_argument("--reference-model", default="L1",
                   help="recon: reconstruct every level whose own model differs also with this one (a name or an .npz; "
                        "'none' to skip), same images and clicks (default L1)")
    b.add_argument("--seed", type=int, default=0, help="mapping, recon, plan: seed (default 0)")
    b.add_argument("--calibration", help="mapping: use this calibration file instead of calibrating first")
    b.add_argument("--geometry", choices=["truth", "tracked"], default="truth",
                   help="recon: truth (default): the DRRs' exact geometry in ct; tracked: through the simulated room's "
                        "tracker and C-arm calibration, in ref, beside the true geometry on the same images (10 random pairs)")
    b.add_argument("--budget", help="mapping: error-budget terms on, comma-separated, 'none', or 'ablation' (every term "
                                    "alone, all, none); default: as the scene file says")
    b.add_argument("--scenario", help="rehearse: scene YAML naming the patient and room (default: the rig's); envs: scenario "
                                      "YAML whose rig, seed and time-triggered faults the environments use")
    b.add_argument("--episodes", type=int, default=20, help="envs: NeedleGuideAlign episodes per policy (default 20)")
    b.add_argument("--view-episodes", type=int, default=4, help="envs: ViewSelection episodes per policy (default 4)")
    b.add_argument("--vector-steps", type=int, default=100, help="envs: steps for the AsyncVectorEnv comparison (default 100)")
    b.add_argument("--shots", choices=["empty_beam", "over_patient"],
                   help="carm: the phantom's shots in the empty beam or over the patient (default: the scene's)")
    b.add_argument("--suite", help="patients: suite YAML (default: scenarios/patients/suite.yaml)")
    b.add_argument("--only", help="patients: comma-separated patient names of the suite to run (default: all)")
    b.add_argument("--clicks-mm", default="1,3", help="rehearse: click SD levels, comma-separated (default 1,3)")
    b.add_argument("--no-geoplan", action="store_true", help="rehearse: skip the 2D-GeoPlan row")
    b.set_defaults(func=cmd_bench)


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
                    Path(args.cases) if args.cases else None, args.click_sigma_mm,
                    None if args.reference_model == "none" else args.reference_model)
    if args.what == "plan":
        from twinsim.bench.plan import main

        ct, labels, table_ = _bench_patient(args)
        levels = [lv.strip().upper() for lv in (args.levels or "L1,T12,T11").split(",") if lv.strip()]
        if not args.click_sigma_mm >= 0:
            raise SystemExit(f"twinsim bench plan: --click-sigma-mm must be >= 0 (got {args.click_sigma_mm})")
        if args.reuse_cases and not args.cases:
            raise SystemExit("twinsim bench plan: --reuse-cases needs --cases DIR (where a previous run saved them)")
        return main(ct, labels, table_, levels, out, 20 if args.pairs is None else args.pairs, args.seed,
                    Path(args.cases) if args.cases else None, args.click_sigma_mm, args.reuse_cases, plan_command.settings_from(args),
                    args.surroundings)
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
        return main(out, list(range(args.seed, args.seed + args.seeds)), shots=args.shots)
    if args.what == "envs":
        from twinsim.bench.envs import main

        main(args.episodes, args.view_episodes, args.vector_steps, args.scenario, Path(args.out) if args.out else None)
        return 0
    if args.what == "rehearse":
        from twinsim.bench.rehearse import main

        if args.ct or args.labels:
            raise SystemExit("twinsim bench rehearse: name another patient with --scenario (a scene file with its ct and labels)")
        try:
            sigmas = tuple(float(x) for x in args.clicks_mm.split(",") if x.strip())
        except ValueError:
            raise SystemExit(f"twinsim bench rehearse: --clicks-mm takes numbers, got {args.clicks_mm!r}") from None
        if not sigmas or min(sigmas) < 0:
            raise SystemExit(f"twinsim bench rehearse: --clicks-mm needs levels >= 0, got {args.clicks_mm!r}")
        return main(args.scenario, out, 10 if args.pairs is None else args.pairs, args.seed, sigmas, not args.no_geoplan)
    if args.what == "patients":
        from twinsim.bench.patients import main

        if not args.click_sigma_mm >= 0:
            raise SystemExit(f"twinsim bench patients: --click-sigma-mm must be >= 0 (got {args.click_sigma_mm})")
        only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
        return main(args.suite, out, 5 if args.pairs is None else args.pairs, args.seed, args.click_sigma_mm, only)
    if args.what == "scene":
        from twinsim.bench.scene import main

        return main(args.scene, out, args.cold_repeats, args.warm_repeats)
    if args.what == "xray":
        from twinsim.bench.xray import main

        ct, labels, table = _bench_patient(args)
        return main(ct, labels, table, args.level, out, args.repeats, reference=not args.no_reference)
    raise SystemExit(f"unknown benchmark {args.what!r}")
