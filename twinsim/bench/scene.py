"""``twinsim bench scene``: scene build time (cold and warm cache) and physics step rate."""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.report import table, write_json
from twinsim.sim.scene_config import SceneConfig, load_scene_config
from twinsim.sim.world import build_operating_room, load_scene_patient


def _build_once(cfg: SceneConfig, cache_dir: Path) -> float:
    t0 = time.perf_counter()
    room = build_operating_room(cfg, patient=load_scene_patient(cfg, progress=False, cache_dir=cache_dir))
    dt = time.perf_counter() - t0
    room.close()
    return dt


def run_scene_bench(scene: str | Path | None = None, cold_repeats: int = 3, warm_repeats: int = 5,
                    steps: int = 2000, step_repeats: int = 5, progress: bool = True) -> dict[str, Any]:
    cfg = load_scene_config(scene)
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="twinsim-bench-") as tmp:
        for i in range(cold_repeats):
            cache = Path(tmp) / f"cold{i}"  # an empty cache every time: a true cold build
            cold.append(_build_once(cfg, cache))
            if progress:
                print(f"  cold build {i + 1}/{cold_repeats}: {cold[-1]:.2f} s", flush=True)
        for i in range(warm_repeats):
            warm.append(_build_once(cfg, Path(tmp) / "cold0"))
            if progress:
                print(f"  warm build {i + 1}/{warm_repeats}: {warm[-1]:.3f} s", flush=True)
        patient = load_scene_patient(cfg, progress=False, cache_dir=Path(tmp) / "cold0")
    room = build_operating_room(cfg, patient=patient)
    rates = []
    try:
        room.step(100)  # let the position controllers settle before timing
        for _ in range(step_repeats):
            t0 = time.perf_counter()
            room.step(steps)
            rates.append(steps / (time.perf_counter() - t0))
        drift = {n: float(np.abs(room.joint_positions(n) - room.robots[n].config.home_q_rad).max()) for n in room.robots}
    finally:
        room.close()
    med_rate = statistics.median(rates)
    return {
        "scene": str(cfg.path.name),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "build_cold_s": {"median": statistics.median(cold), "all": cold},
        "build_warm_s": {"median": statistics.median(warm), "all": warm},
        "cold_over_warm": statistics.median(cold) / statistics.median(warm),
        "physics": {
            "timestep_s": cfg.timestep_s,
            "steps_per_repeat": steps,
            "steps_per_s": {"median": med_rate, "all": rates},
            "real_time_factor": med_rate * cfg.timestep_s,
            "max_joint_drift_rad": drift,
        },
    }


def format_scene_bench(r: dict[str, Any]) -> str:
    ph = r["physics"]
    rows = [
        ["scene build, cold cache", f"{r['build_cold_s']['median']:.2f} s", len(r["build_cold_s"]["all"])],
        ["scene build, warm cache", f"{r['build_warm_s']['median']:.3f} s", len(r["build_warm_s"]["all"])],
        ["cold / warm", f"{r['cold_over_warm']:.1f}x", ""],
        ["physics, both arms", f"{ph['steps_per_s']['median']:.0f} steps/s", len(ph["steps_per_s"]["all"])],
        ["real-time factor", f"{ph['real_time_factor']:.1f}x at {1 / ph['timestep_s']:.0f} Hz", ""],
    ]
    return table(["measure", "median", "repeats"], rows)


def main(scene: str | None, out: Path, cold_repeats: int, warm_repeats: int) -> int:
    print(f"twinsim bench scene: {cold_repeats} cold, {warm_repeats} warm builds, then physics stepping")
    r = run_scene_bench(scene, cold_repeats, warm_repeats)
    print(format_scene_bench(r))
    print(f"wrote {write_json(out, r)}")
    return 0
