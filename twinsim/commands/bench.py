"""``twinsim bench NAME``: the benchmarks, each a sub-command with only its own options.

Each prints a table and writes JSON (``-o``, default ``out/bench_<name>.json``); the benchmarks
themselves live in :mod:`twinsim.bench`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from twinsim.commands import plan as plan_command
from twinsim.commands.common import add_patient_arguments, at_least, comma_floats, comma_list, patient_files
from twinsim.errors import UsageError
from twinsim.evaluation.surroundings import SURROUNDINGS

if TYPE_CHECKING:
    from twinsim.bench.runner import RunnerSettings

# twinsim.evaluation.realistic_clicks' names, without importing it (and open3d) to build the parser.
CLINICIANS = ("ideal", "realistic")
DEFAULT_MISTAKE_RATE = 0.1


def _out(args: argparse.Namespace, default: str | None = None) -> Path:
    return Path(args.out or default or f"out/bench_{args.bench}.json")


def _levels(args: argparse.Namespace) -> list[str]:
    return [lv.upper() for lv in comma_list(args.levels, "--levels", f"bench {args.bench}")] or ["L1", "T12", "T11"]


def add_runner_arguments(p: argparse.ArgumentParser) -> None:
    """Where a bench's cases run (:mod:`twinsim.bench.runner`)."""
    p.add_argument("--workers", type=int, default=None,
                   help="cases side by side in this many processes on this machine, on an embedded Ray (default: the "
                        "machine's cores); 1 runs them one after another in this process, without Ray")
    p.add_argument("--address", help="join an existing Ray cluster at HOST:PORT instead (default: $RAY_ADDRESS); the "
                                     "patient files must be at the same path on every node")
    p.add_argument("--resume", metavar="DIR", help="the records folder of an earlier run: its finished cases (same inputs, "
                                                    "same content key) are kept and only the others run")


def runner_from(args: argparse.Namespace, records: Path, what: str | None = None) -> RunnerSettings:
    """The runner's settings from the options; ``records``: where the case records go when not resuming."""
    from twinsim.bench.runner import RunnerSettings, connect, default_workers

    what = what or f"twinsim bench {args.bench}"
    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise UsageError(f"{what}: --workers must be >= 1, got {workers}")
    records = Path(args.resume) if args.resume else records
    if args.resume and not records.is_dir():
        raise UsageError(f"{what}: --resume {records}: no such folder (the records of an earlier run)")
    settings = RunnerSettings(workers=workers, address=args.address, records=records, resume=bool(args.resume))
    if settings.cluster_address:
        connect(settings)  # before any patient is loaded: an unreachable cluster says so at once
    return settings


def cmd_scene(args: argparse.Namespace) -> int:
    from twinsim.bench.scene import main

    return main(args.scene, _out(args), at_least(args.cold_repeats, 1, "--cold-repeats", "bench scene"),
                at_least(args.warm_repeats, 1, "--warm-repeats", "bench scene"))


def cmd_xray(args: argparse.Namespace) -> int:
    from twinsim.bench.xray import main

    ct, labels, table, _ = patient_files(args, "bench xray")
    return main(ct, labels, table, args.level, _out(args), at_least(args.repeats, 1, "--repeats", "bench xray"),
                reference=not args.no_reference)


def cmd_mapping(args: argparse.Namespace) -> int:
    from twinsim.bench.mapping import main

    return main(args.scene, _out(args), args.seed, Path(args.calibration) if args.calibration else None, args.budget,
                runner_from(args, _out(args).with_name(f"{_out(args).stem}.records")))


def cmd_recon(args: argparse.Namespace) -> int:
    at_least(args.click_sigma_mm, 0.0, "--click-sigma-mm", "bench recon")
    if args.geometry == "tracked":
        from twinsim.bench.recon_tracked import main

        if args.ct or args.labels:
            raise UsageError("twinsim bench recon --geometry tracked: the patient is the scene's (--scene), not --ct/--labels")
        return main(args.scene, _out(args, "out/bench_recon_tracked.json"), 10 if args.pairs is None else args.pairs,
                    args.seed, _levels(args)[0] if args.levels else None)
    from twinsim.bench.recon import main

    if args.scene:
        raise UsageError("twinsim bench recon: --scene is for --geometry tracked; name the patient with --ct and --labels")
    ct, labels, table, _ = patient_files(args, "bench recon")
    return main(ct, labels, table, _levels(args), _out(args), 20 if args.pairs is None else args.pairs, args.seed,
                Path(args.cases) if args.cases else None, args.click_sigma_mm,
                None if args.reference_model == "none" else args.reference_model,
                runner_from(args, _out(args).with_name(f"{_out(args).stem}.records")))


def cmd_plan(args: argparse.Namespace) -> int:
    from twinsim.bench.plan import main
    from twinsim.evaluation.realistic_clicks import Clinician

    sigmas = comma_floats(args.clicks_mm, "--click-sigma-mm", "bench plan", minimum=0.0)
    if args.reuse_cases and not args.cases:
        raise UsageError("twinsim bench plan: --reuse-cases needs --cases DIR (where a previous run saved them)")
    ct, labels, table, _ = patient_files(args, "bench plan")
    return main(ct, labels, table, _levels(args), _out(args), args.pairs, args.seed, Path(args.cases) if args.cases else None,
                sigmas, args.reuse_cases, plan_command.settings_from(args), args.surroundings,
                Clinician(args.clinician, args.mistake_rate),
                runner_from(args, _out(args).with_name(f"{_out(args).stem}.records")))


def cmd_hal(args: argparse.Namespace) -> int:
    from twinsim.bench.hal import main

    return main(_out(args), at_least(args.repeats, 1, "--repeats", "bench hal"))


def cmd_carm(args: argparse.Namespace) -> int:
    from twinsim.bench.carm import main

    at_least(args.seeds, 1, "--seeds", "bench carm")
    return main(_out(args), list(range(args.seed, args.seed + args.seeds)), shots=args.shots)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from twinsim.bench.rehearse import main
    from twinsim.evaluation.realistic_clicks import Clinician

    sigmas = comma_floats(args.clicks_mm, "--click-sigma-mm", "bench rehearse", minimum=0.0)
    return main(args.scene, _out(args), at_least(args.pairs, 1, "--pairs", "bench rehearse"), args.seed, sigmas,
                not args.no_geoplan, Clinician(args.clinician, args.mistake_rate),
                runner_from(args, _out(args).with_name(f"{_out(args).stem}.records")))


def cmd_patients(args: argparse.Namespace) -> int:
    from twinsim.bench.patients import main
    from twinsim.evaluation.realistic_clicks import Clinician

    at_least(args.click_sigma_mm, 0.0, "--click-sigma-mm", "bench patients")
    only = comma_list(args.only, "--only", "bench patients") or None
    return main(args.suite, _out(args), at_least(args.pairs, 1, "--pairs", "bench patients"), args.seed, args.click_sigma_mm, only,
                Clinician(args.clinician, args.mistake_rate), runner_from(args, _out(args).with_name(f"{_out(args).stem}.records")))


def cmd_envs(args: argparse.Namespace) -> int:
    from twinsim.bench.envs import main

    main(at_least(args.episodes, 1, "--episodes", "bench envs"), at_least(args.view_episodes, 0, "--view-episodes", "bench envs"),
         at_least(args.vector_steps, 1, "--vector-steps", "bench envs"), args.scenario, Path(args.out) if args.out else None)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from twinsim.bench.view_latency import main
    from twinsim.view.browser import BrowserMissing
    from twinsim.view.timeline import TimelineError, load_timeline

    rates = comma_floats(args.rates_hz, "--rates-hz", "bench view", minimum=1.0)
    try:
        load_timeline(Path(args.replay))  # refused before a browser starts
    except TimelineError as exc:
        raise UsageError(f"twinsim bench view: {exc}; run `twinsim -o {args.replay}` first") from None
    try:
        clients = comma_list(args.clients, "--clients", "bench view")
        if not clients or set(clients) - {"wire", "chromium"}:
            raise UsageError(f"twinsim bench view: --clients takes wire and/or chromium, got {args.clients!r}")
        return main(Path(args.replay), _out(args), list(rates), at_least(args.seconds, 1.0, "--seconds", "bench view"),
                    int(at_least(args.repeats, 1, "--repeats", "bench view")), clients)
    except BrowserMissing as exc:
        raise UsageError(f"twinsim bench view: {exc}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks that print a table and write JSON (twinsim bench NAME --help)",
                       description="Benchmarks: each prints a table, writes JSON (and most a PNG) and scores what the "
                                   "system produced through its sensors against the simulation's truth.")
    benches = b.add_subparsers(dest="bench", metavar="NAME", required=True)

    def bench(name: str, help_: str, description: str, func: object) -> argparse.ArgumentParser:
        p = benches.add_parser(name, help=help_, description=description)
        p.add_argument("-o", "--out", help=f"JSON output (default: out/bench_{name}.json)")
        p.set_defaults(func=func)
        return p

    def seed(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=0, help="seed of the cases (default 0)")

    def click_sigma(p: argparse.ArgumentParser) -> None:
        p.add_argument("--click-sigma-mm", type=float, default=1.0,
                       help="SD of the simulated clinician's click error at the vertebra, mm (default 1)")

    def clicks(p: argparse.ArgumentParser, default: str = "1") -> None:
        p.add_argument("--click-sigma-mm", "--clicks-mm", dest="clicks_mm", default=default,
                       help="SD of the simulated clinician's click error at the vertebra, mm; comma-separated for a curve, "
                            f"e.g. 0.5,1,2,3 (default {default})")
        clinician(p)

    def clinician(p: argparse.ArgumentParser) -> None:
        p.add_argument("--clinician", choices=CLINICIANS, default="ideal",
                       help="ideal: each landmark where it projects, plus noise (default); realistic: what the image shows "
                            "(the middle of a shadow, the end of an outline), plus noise, and gross mistakes at "
                            "--mistake-rate")
        p.add_argument("--mistake-rate", type=float, default=DEFAULT_MISTAKE_RATE,
                       help=f"realistic clinician: the share of cases with one gross mistake (left/right swapped in a view, "
                            f"a landmark on the neighbouring vertebra, one left out; default {DEFAULT_MISTAKE_RATE:g})")

    def scene(p: argparse.ArgumentParser, what: str = "") -> None:
        p.add_argument("--scene", help=f"scene YAML{what} (default: the default room)")

    p = bench("scene", "scene build time (cold and warm cache) and physics step rate",
              "Scene build time with a cold and a warm patient cache, physics step rate with both arms.", cmd_scene)
    scene(p)
    p.add_argument("--cold-repeats", type=int, default=3, help="cold builds (default 3)")
    p.add_argument("--warm-repeats", type=int, default=5, help="warm builds (default 5)")

    p = bench("xray", "DRRs per second, nanodrr against diffdrr's Siddon renderer",
              "DRRs per second at 256^2 and 512^2, nanodrr vs diffdrr's Siddon renderer (same CT, same geometry, same "
              "run), on CPU and, where present, on CUDA.", cmd_xray)
    add_patient_arguments(p)
    p.add_argument("--level", default="L1", help="vertebra the C-arm is centred on (default L1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up (default 3)")
    p.add_argument("--no-reference", action="store_true", help="skip diffdrr (ours only)")

    p = bench("mapping", "seed 004's mapping tables, the needle axis, TRE at the vertebra; the error budget's terms",
              "Seed 004's Tables 2 and 3: real-to-virtual and virtual-to-real (open and closed loop) errors over 10 "
              "tool-tip points, the needle axis, the tip while the arm moves, and the TRE at the vertebra through the "
              "whole X-ray chain; a PNG like its Figures 6 and 10.", cmd_mapping)
    scene(p)
    seed(p)
    p.add_argument("--calibration", help="use this calibration file instead of calibrating first")
    p.add_argument("--budget", help="error-budget terms on, comma-separated, 'none', or 'ablation' (every term alone, all, "
                                    "none); default: as the scene file says")
    add_runner_arguments(p)

    p = bench("recon", "reconstruction accuracy: ours vs an NCC baseline vs the initialization",
              "Vertebra reconstruction from AP+LAT and random view pairs of DRRs with simulated clicks; ours vs an "
              "NCC-only baseline vs the initialization; DICE, NSD, HD95, MSD, seconds per vertebra.", cmd_recon)
    add_patient_arguments(p)
    p.add_argument("--levels", help="comma-separated vertebrae (default L1,T12,T11), each with its regional model")
    p.add_argument("--pairs", type=int, default=None, help="random view pairs per level (default 20; 10 with --geometry tracked)")
    click_sigma(p)
    p.add_argument("--cases", help="also save each level's AP+LAT images and clicks.json here (input for `twinsim reconstruct`)")
    p.add_argument("--reference-model", default="L1",
                   help="reconstruct every level whose own model differs also with this one (a name or an .npz; 'none' "
                        "to skip), same images and clicks (default L1)")
    p.add_argument("--geometry", choices=["truth", "tracked"], default="truth",
                   help="truth (default): the DRRs' exact geometry in ct; tracked: through the simulated room's tracker "
                        "and C-arm calibration, in ref, beside the true geometry on the same images")
    scene(p, ", --geometry tracked only")
    seed(p)
    add_runner_arguments(p)

    p = bench("plan", "how often both paths are safe in the true bone, against baselines",
              "Both transpedicular paths from simulated cases; ours vs transfer only vs 2D-GeoPlan vs the planner on "
              "the true surface; success (both paths safe in the true bone) with its 95 % interval, clearance to the "
              "true cortex, breaches, entry and target errors.", cmd_plan)
    add_patient_arguments(p)
    p.add_argument("--levels", help="comma-separated vertebrae (default L1,T12,T11)")
    p.add_argument("--pairs", type=int, default=20, help="random view pairs per level (default 20)")
    clicks(p)
    p.add_argument("--cases", help="save every case's images, clicks and reconstruction JSON here (input for `twinsim plan`)")
    p.add_argument("--reuse-cases", action="store_true",
                   help="take each case's reconstruction from --cases where a previous run saved it (compare planner "
                        "settings without refitting)")
    p.add_argument("--surroundings", choices=SURROUNDINGS, default="ct",
                   help="render the X-rays from the CT as it is (default), or with everything but the scored vertebra "
                        "replaced by uniform soft tissue or by air: an ablation (give each its own --cases DIR)")
    add_runner_arguments(p)
    plan_command.add_settings_arguments(p)
    seed(p)

    p = bench("hal", "the HAL's overhead against direct calls; franky-sim and NDI-peer round trips",
              "HAL overhead per tracker frame and per joint command against direct calls (same run), franky-sim and "
              "NDI-peer round trips.", cmd_hal)
    p.add_argument("--repeats", type=int, default=7, help="timed repeats, HAL and direct calls interleaved (default 7)")

    p = bench("carm", "the C-arm calibration against the room's truth",
              "C-arm calibration with a tracked bead phantom in the simulated room, against its truth, for --seeds "
              "seeds from --seed.", cmd_carm)
    p.add_argument("--seeds", type=int, default=5, help="how many seeds, from --seed (default 5)")
    seed(p)
    p.add_argument("--shots", choices=["empty_beam", "over_patient"],
                   help="the phantom's shots in the empty beam or over the patient (default: the scene's)")

    p = bench("rehearse", "seeded rehearsals of the whole procedure, scored in the true bone",
              "Seeded rehearsals of the whole procedure on random view pairs at each click level, and a 2D-GeoPlan "
              "row; success (both guides placed, breach-free in the true bone), tip and axis errors, motions refused, "
              "wall time per step, the collision check's speed.", cmd_rehearse)
    scene(p, " naming the patient and the room")
    p.add_argument("--pairs", type=int, default=10, help="random view pairs (default 10)")
    clicks(p, "1,3")
    p.add_argument("--no-geoplan", action="store_true", help="skip the 2D-GeoPlan row")
    seed(p)
    add_runner_arguments(p)

    p = bench("patients", "the procedure on every patient and target of the patient suite",
              "The procedure (or, where a CT holds no room, reconstruction and plan) on every patient and target of a "
              "suite file; stops before planning, success, success given a plan safe in the true bone, unchecked "
              "motions, tip and axis.", cmd_patients)
    p.add_argument("--suite", help="suite YAML (default: scenarios/patients/suite.yaml)")
    p.add_argument("--only", help="comma-separated patient names of the suite to run (default: all)")
    p.add_argument("--pairs", type=int, default=5, help="random view pairs per target (default 5)")
    click_sigma(p)
    clinician(p)
    seed(p)
    add_runner_arguments(p)

    p = bench("envs", "the gymnasium environments' step rates and baselines, PandaReach-v3 beside them",
              "The environments' step rates, scripted and random baselines' returns and success, panda-gym's "
              "PandaReach-v3 in the same run, and 2 AsyncVectorEnv workers against one env.", cmd_envs)
    p.add_argument("--episodes", type=int, default=20, help="NeedleGuideAlign episodes per policy (default 20)")
    p.add_argument("--view-episodes", type=int, default=4, help="ViewSelection episodes per policy (default 4)")
    p.add_argument("--vector-steps", type=int, default=100, help="steps for the AsyncVectorEnv comparison (default 100)")
    p.add_argument("--scenario", help="scenario YAML whose rig, seed and time-triggered faults the environments use")

    p = bench("view", "the web view's twin-to-browser latency and update rate in headless Chromium",
              "A rehearsal's recorded timeline fed to the web view's live path at each --rates-hz, the page loaded in "
              "headless Chromium (Debian's chromium): the twin-to-browser latency (median, p90), the browser's update "
              "rate, and the view's draws, every layer on.", cmd_view)
    p.add_argument("--replay", default="out/rehearsal", help="a rehearsal's output folder with its twin_timeline.npz "
                                                             "(default out/rehearsal, the main job's)")
    p.add_argument("--rates-hz", default="30,60", help="comma-separated feed rates, samples a second of wall time "
                                                      "(default 30,60)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of feed per run (default 15)")
    p.add_argument("--repeats", type=int, default=3, help="runs per rate and client (default 3)")
    p.add_argument("--clients", default="wire,chromium",
                   help="wire: viser's protocol decoded by a script; chromium: headless Chromium (default both)")
