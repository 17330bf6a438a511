"""Shared fixtures. Every test run meshes the example patient from scratch in its own cache, so the real
pipeline runs each time (about half a minute on 2 cores); the run's xdist workers share that cache,
and the first to need the patient meshes it while the other waits for it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each, set before NumPy and Torch start their thread pools. Their
    # default of a thread per core oversubscribed the machine and the fitting tests ran 4-6x slower than alone.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

# The controller (or a run without xdist) makes the run's cache; the workers it starts inherit the variable.
if not os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["TWINSIM_TEST_RUN_CACHE"] = tempfile.mkdtemp(prefix="twinsim-test-cache-")
_SESSION_CACHE = os.environ.get("TWINSIM_TEST_RUN_CACHE") or tempfile.mkdtemp(prefix="twinsim-test-cache-")
os.environ["TWINSIM_CACHE"] = _SESSION_CACHE


# Seconds each heavy file takes on one worker (2 cores, 2026-12-07). The workers take whole files in collection
# order, so the longest go first: a long file started last leaves the other worker idle at the end.
FILE_SECONDS = {"test_procedure.py": 115, "test_patients.py": 105, "test_runner.py": 97, "test_imaging.py": 90,
                "test_ssm.py": 79, "test_scenarios.py": 61, "test_bench_and_lint.py": 47, "test_patient_suite.py": 38,
                "test_envs.py": 34, "test_recon.py": 32, "test_motion.py": 29, "test_planning.py": 28,
                "test_mapping.py": 26, "test_wheel.py": 24, "test_click_consistency.py": 24, "test_carm_calibration.py": 22}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    order = {}
    for item in items:
        order.setdefault(item.path.name, len(order))
    items.sort(key=lambda it: (-FILE_SECONDS.get(it.path.name, 0), order[it.path.name]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only the process that made it removes it (a few hundred MB left behind per run otherwise).
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def example():
    from twinsim.anatomy.example import example_patient

    return example_patient()


@pytest.fixture(scope="session")
def example_patient_model(example):
    from filelock import FileLock

    from twinsim.anatomy.patient import build_patient

    cache = Path(_SESSION_CACHE) / "patients"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "example.lock")):  # one worker meshes, the other then reads the cache
        return build_patient(example.ct, example.labels, example.label_table, name=example.name, cache_dir=cache,
                             progress=False)


@pytest.fixture(scope="session")
def room(example_patient_model):
    from twinsim.sim.world import build_operating_room

    r = build_operating_room(patient=example_patient_model)
    yield r
    r.close()


def synthetic_volume(shape=(40, 36, 30)) -> tuple[np.ndarray, np.ndarray]:
    """A small body-like CT in HU: air, a soft-tissue cylinder, two bony blocks labelled L1/T12.

    T12 touches the superior edge (last slice), so it is cut by the field of view.
    """
    hu = np.full(shape, -1000.0, dtype=np.float32)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    body = (i - shape[0] / 2) ** 2 / 16**2 + (j - shape[1] / 2) ** 2 / 14**2 < 1
    hu[body] = 40.0
    labels = np.zeros(shape, dtype=np.uint8)
    labels[14:26, 12:22, 6:16] = 31  # L1: 12 x 10 x 10 voxels
    labels[15:25, 13:21, 20:30] = 32  # T12: reaches the last slice
    hu[labels > 0] = 400.0
    return hu, labels


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, unit: str = "mm") -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, str(path))
    return path


@pytest.fixture
def synthetic_pair(tmp_path):
    hu, labels = synthetic_volume()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-30.0, -27.0, -30.0]
    ct = write_nifti(tmp_path / "ct.nii.gz", hu.astype(np.int16), affine)
    lab = write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    return ct, lab, hu, labels, affine


@pytest.fixture(scope="session")
def example_ct(example):
    from twinsim.anatomy.ct import load_ct

    return load_ct(example.ct, example.labels, example.label_table)


@pytest.fixture(scope="session")
def drr_renderer(example_ct):
    from twinsim.imaging.drr import DRRRenderer

    return DRRRenderer(example_ct)
