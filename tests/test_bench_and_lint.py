import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scene_bench_reports_build_and_physics(tmp_path, example_patient_model):
    from twinsim.bench.scene import format_scene_bench, run_scene_bench

    r = run_scene_bench(cold_repeats=1, warm_repeats=2, steps=200, step_repeats=2, progress=False)
    assert r["build_cold_s"]["median"] > r["build_warm_s"]["median"] > 0
    assert r["physics"]["steps_per_s"]["median"] > 50  # PyBullet steps two arms thousands of times a second
    # Position control holds both arms at home while stepping.
    assert max(r["physics"]["max_joint_drift_rad"].values()) < 0.01
    back = json.loads(json.dumps(r))  # the JSON the bench writes holds every figure
    assert back.keys() == r.keys() and back["physics"]["steps_per_s"] == r["physics"]["steps_per_s"]
    assert "real-time factor" in format_scene_bench(r)


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
def test_the_twins_side_type_checks_clean(tmp_path):
    # The files and settings are pyproject.toml's [tool.mypy]; a fresh cache so that a stale one hides nothing.
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0 and "Success: no issues found" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_xray_bench_times_both_renderers(example):
    from twinsim.bench.xray import format_xray_bench, run_xray_bench

    r = run_xray_bench(example.ct, example.labels, example.label_table, sizes=(48,), repeats=1, progress=False)
    row = r["results"][0]
    # 48 px DRRs take milliseconds on any CPU: a rate under 1/s means the timing or the renderer is broken.
    assert row["nanodrr_cpu_drr_per_s"] > 1.0 and row["diffdrr_siddon_cpu_drr_per_s"] > 1.0
    assert row["image_correlation"] > 0.99
    assert json.loads(json.dumps(r))["results"][0]["image_correlation"] == row["image_correlation"]
    assert "diffdrr Siddon" in format_xray_bench(r)
