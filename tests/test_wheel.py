"""twinsim as an installed wheel: built from this tree, installed into a fresh venv, run outside the repository.

It is also the test of `twinsim scene` on the command line.

The fresh venv reads its dependencies (torch, open3d, pybullet ...) from the development venv's
site-packages, listed in a plain ``.pth`` line, so that the test takes seconds instead of a full
install; twinsim itself comes only from the wheel, with its assets, rigs and scenarios as package
data, and runs from an empty working directory.
"""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(base / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((base / "dist").glob("twinsim-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    # Dependencies from the development venv, as a plain path: its .pth files (the editable twinsim among them) are not read.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = base / "elsewhere"  # not the repository: nothing may be found relative to the working directory
    work.mkdir()
    return env_dir, site, work


def _run(env_dir, work, *argv, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(env_dir / "bin" / "twinsim"), *argv], cwd=work, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.timeout(900)
def test_the_wheel_runs_help_scene_and_a_short_rehearsal(installed):
    env_dir, site, work = installed
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import twinsim, twinsim.paths as p; print(twinsim.__file__); "
                            "print(*(p.bundled(n) for n in p.BUNDLED), sep='\\n')"],
                           cwd=work, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(site.resolve()), line  # the wheel's package and its package data
    assert (site / "twinsim" / "_data" / "assets" / "ssm" / "ssm_L1.npz").is_file()

    out = _run(env_dir, work, "--help", timeout=120)
    assert out.returncode == 0 and "bench" in out.stdout, out.stderr
    out = _run(env_dir, work, "scene", "-o", "scene_out")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "L1" in out.stdout and "COLLIDING" not in out.stdout  # the room's report: target, no robot touching
    assert (work / "scene_out" / "scene.png").stat().st_size > 10_000
    # A short rehearsal: the shipped scenario that calibrates, takes both X-rays and stops safely at the landmarks.
    scenario = site / "twinsim" / "_data" / "scenarios" / "missing-landmarks.yaml"
    out = _run(env_dir, work, "scenario", "run", str(scenario), "-o", "scenario_out")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 of 1 scenarios met their expectation" in out.stdout
    assert (work / "scenario_out" / "missing-landmarks" / "rehearsal.json").is_file()
