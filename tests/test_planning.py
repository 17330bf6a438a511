"""Transpedicular planning: clearance geometry, refinement, safety check, plan file, picture, the wall."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from twinsim.planning.cannula import BoneSurface, PathGeometryError
from twinsim.planning.plan_file import PlanFileError, load_plan, save_plan
from twinsim.planning.planner import assess_pair, plan_vertebra
from twinsim.planning.settings import PlanSettings, PlanSettingsError
from twinsim.shape.model import load_model

ROOT = Path(__file__).resolve().parents[1]


def cylinder(radius_mm: float, length_mm: float, resolution: int = 256) -> BoneSurface:
    """A closed cylinder along z from -length/2 to +length/2: a 'pedicle' of known radius."""
    m = o3d.geometry.TriangleMesh.create_cylinder(radius=radius_mm, height=length_mm, resolution=resolution, split=8)
    return BoneSurface(np.asarray(m.vertices), np.asarray(m.triangles))


@pytest.fixture(scope="module")
def model():
    return load_model("L1")


@pytest.fixture(scope="module")
def mean_plan(model):
    v = model.mean_mm
    return plan_vertebra(v, model.faces, model.annotation_points(v), frame="ssm")


def test_centred_path_in_a_cylinder_reports_the_analytic_clearance():
    s = cylinder(4.0, 60.0)
    prof = s.clearance(np.array([0, 0, -30.0]), np.array([0, 0, 25.0]), dock_mm=5.0)
    # The polygonal wall's inscribed radius is R cos(pi/n).
    assert prof.minimum_mm == pytest.approx(4.0 * np.cos(np.pi / 256), abs=0.02)
    assert prof.depth_mm[0] == pytest.approx(5.0)
    # Off centre by d: the clearance is R - d, towards the near wall.
    off = s.clearance(np.array([1.5, 0, -30.0]), np.array([1.5, 0, 25.0]))
    assert off.minimum_mm == pytest.approx(2.5, abs=0.03)
    assert off.nearest_direction[0] @ np.array([1.0, 0, 0]) > 0.99
    # A path that leaves the cylinder has a negative clearance (the axis itself is outside).
    out = s.clearance(np.array([0, 0, -30.0]), np.array([6.0, 0, 25.0]))
    assert out.minimum_mm < 0


def test_degenerate_paths_and_surfaces_are_clear_errors():
    s = cylinder(4.0, 60.0, 32)
    with pytest.raises(PathGeometryError, match="coincide"):
        s.clearance(np.zeros(3), np.zeros(3))
    with pytest.raises(PathGeometryError, match="finite 3D point"):
        s.clearance(np.array([0, 0, np.nan]), np.ones(3))
    with pytest.raises(PathGeometryError, match="vertices"):
        BoneSurface(np.zeros((2, 3)), np.zeros((1, 3), int))
    with pytest.raises(PlanSettingsError, match="cannula_diameter_mm"):
        PlanSettings(cannula_diameter_mm=0)
    with pytest.raises(PlanSettingsError, match="convergence_deg"):
        PlanSettings(convergence_deg=(40.0, 10.0))


def test_refined_paths_are_safe_and_clear_more_than_transfer(model, mean_plan):
    v = model.mean_mm
    transfer = plan_vertebra(v, model.faces, model.annotation_points(v), PlanSettings(refine=False))
    assert mean_plan.safe, [p.reasons for p in mean_plan.paths.values()]
    lo, hi = mean_plan.settings.convergence_deg
    assert lo <= mean_plan.convergence_deg <= hi
    for side, p in mean_plan.paths.items():
        assert p.method == "refined" and transfer.paths[side].method == "transfer"
        assert p.min_clearance_mm >= transfer.paths[side].min_clearance_mm + 0.3
        assert p.min_clearance_mm >= 2.5
        assert p.tip_depth_fraction >= 2 / 3 and p.tip_to_cortex_mm >= 5.0
        assert p.tip_in_body


def test_refinement_holds_on_shapes_at_plus_minus_2_sd(model):
    for k in range(2):
        for sd in (-2.0, 2.0):
            b = np.zeros(model.n_modes)
            b[k] = sd
            v = model.instance(b)
            plan = plan_vertebra(v, model.faces, model.annotation_points(v))
            assert plan.safe, (k, sd, [p.reasons for p in plan.paths.values()])


def test_multi_start_refinement_finds_the_wider_line_where_one_start_stops_early(model):
    """On a rough surface (the mean shape with 0.4 mm of noise along its normals, like a segmentation's),
    Nelder-Mead from the transferred path alone stops in a local optimum that depends on the landmarks."""
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(model.mean_mm), o3d.utility.Vector3iVector(model.faces))
    mesh.compute_vertex_normals()
    v = model.mean_mm + np.asarray(mesh.vertex_normals) * np.random.default_rng(1).normal(0.0, 0.4, (len(model.mean_mm), 1))
    rng = np.random.default_rng(0)
    landmark_sets = [{k: x + rng.normal(0.0, 0.7, 3) for k, x in model.annotation_points(model.mean_mm).items()} for _ in range(3)]
    worst = {}
    for starts in (1, 9):
        c = np.array([[p.min_clearance_mm for p in plan_vertebra(v, model.faces, lm, PlanSettings(refine_starts=starts)).paths.values()]
                      for lm in landmark_sets])
        worst[starts] = c.min(axis=0)
        if starts == 9:
            assert np.ptp(c, axis=0).max() < 0.35, c
    assert (worst[9] >= worst[1] - 0.05).all() and (worst[9] - worst[1]).max() >= 0.3, worst


def test_a_path_pushed_through_the_pedicle_wall_is_refused_with_its_clearance(model, mean_plan):
    v = model.mean_mm
    lm = model.annotation_points(v)
    paths = {s: (p.entry_mm, p.target_mm) for s, p in mean_plan.paths.items()}
    # Shift the left path 5 mm towards the midline (RAS: the patient's left is -x, medial is +x): into the canal.
    e, t = paths["left"]
    paths["left"] = (e + [5.0, 0, 0], t + [5.0, 0, 0])
    checked = assess_pair(v, model.faces, lm, paths)
    left, right = checked.paths["left"], checked.paths["right"]
    assert right.safe and not left.safe and not checked.safe
    assert left.min_clearance_mm < 2.5
    assert left.nearest_wall == "medial"
    reason = " ".join(left.reasons)
    assert f"clearance {left.min_clearance_mm:.2f} mm" in reason and "medial" in reason


def test_a_tip_beyond_the_anterior_cortex_is_refused(model, mean_plan):
    v = model.mean_mm
    p = mean_plan.paths["right"]
    long_target = p.target_mm + 30.0 * p.axis
    checked = assess_pair(v, model.faces, model.annotation_points(v), {"right": (p.entry_mm, long_target)})
    assert not checked.paths["right"].safe
    assert any("tip" in r for r in checked.paths["right"].reasons)


def test_plan_file_round_trips_and_refuses_bad_files(tmp_path, mean_plan):
    path = save_plan(tmp_path / "L1_plan.json", mean_plan, "L1", {"reconstruction": "x.json"})
    back, raw = load_plan(path)
    assert raw["format"] == "twinsim-plan/1" and raw["safe"] is True
    for side, p in mean_plan.paths.items():
        q = back.paths[side]
        assert np.allclose(q.entry_mm, p.entry_mm) and np.allclose(q.target_mm, p.target_mm)
        assert q.min_clearance_mm == pytest.approx(p.min_clearance_mm) and q.safe == p.safe
        assert raw["paths"][side]["length_mm"] == pytest.approx(p.length_mm)
    assert back.settings == mean_plan.settings

    def broken(edit, match):
        d = json.loads(path.read_text())
        edit(d)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(d))
        with pytest.raises(PlanFileError, match=match):
            load_plan(bad)

    broken(lambda d: d.update(format="other/1"), "not a 'twinsim-plan/1'")
    broken(lambda d: d["paths"].pop("left"), "exactly 'left' and 'right'")
    broken(lambda d: d["paths"]["left"].update(axis=[1.0, 0.0, 0.0]), "'axis' is not the unit direction")
    broken(lambda d: d["paths"]["left"].update(length_mm=10.0), "'length_mm'")
    broken(lambda d: d["paths"]["left"].update(target_mm=[1, 2]), "3 finite numbers")
    broken(lambda d: d["paths"]["right"].update(safe=True, reasons=["no"]), "marked safe but")
    broken(lambda d: d["paths"]["right"].update(safe=False, reasons=[]), "unsafe without a reason")
    broken(lambda d: d["settings"].update(cannula_mm=3), "settings")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(PlanFileError, match="not valid JSON"):
        load_plan(tmp_path / "junk.json")
    with pytest.raises(PlanFileError, match="not found"):
        load_plan(tmp_path / "missing.json")


def test_cannula_chord_through_a_cylinder_is_its_diameter_on_the_central_ray():
    from twinsim.imaging.projection import ProjectionGeometry
    from twinsim.planning.picture import cylinder_chord_mm

    # Source 600 mm above the origin looking down -z... as the pinhole's z axis: T_frame_source has z towards the detector.
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[2, 3] = 600.0
    g = ProjectionGeometry(1000.0, 201, 201, (0.5, 0.5), T, frame="test")
    chord = cylinder_chord_mm(g, np.array([-20.0, 0, 0]), np.array([20.0, 0, 0]), 2.5)
    c = chord[100, 100]  # the central ray meets the axis at a right angle
    assert c == pytest.approx(5.0, abs=0.05)
    assert chord.max() == pytest.approx(5.0, abs=0.1)
    u, v = g.project(np.array([[30.0, 0, 0]]))[0]  # beyond the cap: no metal
    assert chord[int(v), int(u)] == 0.0


def test_plan_command_writes_plan_and_picture_and_refuses_bad_input(tmp_path, model, capsys):
    from twinsim.cli import main

    rec = {"format": "twinsim-reconstruction/1", "level": "L1", "model": "L1", "frame": "ct",
           "T_frame_model_mm": np.eye(4).tolist(), "coeffs_sd": [0.5, -0.3], "images": []}
    f = tmp_path / "L1_reconstruction.json"
    f.write_text(json.dumps(rec))
    assert main(["plan", "--reconstruction", str(f), "-o", str(tmp_path / "out")]) == 0
    back, raw = load_plan(tmp_path / "out" / "L1_plan.json")
    assert raw["frame"] == "ct" and back.safe and raw["source"]["model"] == "L1"
    assert (tmp_path / "out" / "L1_plan.png").stat().st_size > 20_000
    # A cannula too thick for this pedicle is refused: exit 1, the file says why.
    assert main(["plan", "--reconstruction", str(f), "-o", str(tmp_path / "thick"), "--cannula-mm", "11"]) == 1
    _, raw = load_plan(tmp_path / "thick" / "L1_plan.json")
    assert raw["safe"] is False and all(p["reasons"] for p in raw["paths"].values())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**rec, "T_frame_model_mm": [[1, 0], [0, 1]]}))
    assert main(["plan", "--reconstruction", str(bad), "-o", str(tmp_path / "bad_out")]) == 2
    assert not (tmp_path / "bad_out").exists()  # nothing half-written
    assert main(["plan", "--reconstruction", str(tmp_path / "nope.json")]) == 2
    # X-rays whose geometry is in another frame are not drawn (the plan itself is still made).
    from twinsim.bench.recon import view_geometry
    from twinsim.imaging.acquisition import Acquisition
    from twinsim.imaging.views import NAMED_VIEWS

    g = view_geometry(np.zeros(3), NAMED_VIEWS["AP"], 64)
    other = Acquisition(np.zeros((64, 64), np.float32), type(g)(g.sdd_mm, 64, 64, g.pixel_spacing_mm, g.T_frame_source_mm, frame="ref"),
                        (0.0, 1.0), view={"name": "AP"})
    png, _ = other.save(tmp_path / "xr", "AP")
    assert main(["plan", "--reconstruction", str(f), "--images", str(png), "-o", str(tmp_path / "frames")]) == 0
    assert "not drawn" in capsys.readouterr().err
    assert main(["plan", "--reconstruction", str(f), "--cannula-mm", "-1", "-o", str(tmp_path / "neg")]) == 2
    assert main(["plan", "--reconstruction", str(f), "--convergence-deg", "5", "-o", str(tmp_path / "conv")]) == 2
    assert "MIN,MAX" in capsys.readouterr().err and not (tmp_path / "conv").exists()


# What reads ground truth: the simulated room, the CT and its labels, evaluation code.
FORBIDDEN = ("twinsim.sim", "twinsim.bench", "twinsim.evaluation", "twinsim.imaging.drr",
             "twinsim.anatomy.ct", "twinsim.anatomy.labels",
             "twinsim.anatomy.patient", "twinsim.anatomy.example")


def test_the_planner_imports_nothing_that_reads_ground_truth():
    code = ("import sys, pkgutil, importlib, twinsim.planning as P\n"
            "for m in pkgutil.iter_modules(P.__path__): importlib.import_module('twinsim.planning.' + m.name)\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    bad = [m for m in out if m.startswith(FORBIDDEN)]
    assert not bad, f"the planner pulls in ground-truth modules: {bad}"
    assert "twinsim.planning.planner" in out


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env)


def test_import_contracts_hold_and_catch_a_violation(tmp_path):
    ok = _lint_imports(ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "KEPT" in ok.stdout
    # The same contracts on a copy of the package where the planner reads the CT must break.
    shutil.copytree(ROOT / "twinsim", tmp_path / "twinsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "twinsim" / "planning" / "settings.py", "a") as fh:
        fh.write("\nimport twinsim.anatomy.ct  # noqa: E402, F401\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    broken = _lint_imports(tmp_path, env)
    assert broken.returncode != 0 and "BROKEN" in broken.stdout, broken.stdout + broken.stderr
