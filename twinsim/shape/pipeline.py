"""The shape-model jobs behind `twinsim ssm`: build, re-annotate, evaluate and show the regional models."""

from __future__ import annotations

import hashlib
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.report import table, write_figure
from twinsim.shape.model import ShapeModel, load_model
from twinsim.shape.sources import ShapeDataError, load_template, load_training_shapes

log = logging.getLogger(__name__)

LICENCES = {
    "verse": "VerSe 2020 (CC BY-SA 4.0) via madsendennis/how-to-shape-model (Apache-2.0)",
    "artisynth": "ArtiSynth lumbosacral spine model, Remus et al. 2021 (BSD-3-Clause)",
    "clouthier": "Clouthier et al. 2023 lumbar mean shape (MIT)",
    "ctacardio": "3D Slicer CTACardio sample, segmented, via raviumadi/scoliomorph (MIT)",
    "verse004": "VerSe 2020 sub-verse004 expert labels (CC BY-SA 4.0), via anjany/verse",
}
LICENCE = "CC BY-SA 4.0 (inherited from VerSe)"


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def supported_modes(persons: list[str], levels: list[str], n_shapes: int, cap: int = 15) -> int:
    """Modes the data can support: between-person variation spans at most (people - 1) directions and
    between-level variation at most (levels - 1); PCA itself gives at most (shapes - 1)."""
    return max(1, min(cap, n_shapes - 1, (len(set(persons)) - 1) + (len(set(levels)) - 1)))


def _example_neighbours(levels: tuple[str, ...]) -> dict[str, SurfaceMesh]:
    """The example CT's complete vertebrae at the model's levels and one level either side."""
    from twinsim.anatomy.labels import VERTEBRA_LEVELS

    pos = [VERTEBRA_LEVELS.index(m) for m in levels]
    return {lv: m for lv, m in example_vertebrae().items() if min(abs(VERTEBRA_LEVELS.index(lv) - p) for p in pos) <= 1}


def build(data_dir: Path, out_dir: Path, models: list[str]) -> int:
    import time

    from twinsim.shape.annotations import annotate, model_variants
    from twinsim.shape.build import BuildParams, build_model, params_dict, remeshed_template
    from twinsim.shape.held_out import check_held_out
    from twinsim.shape.quality import correspondence_errors
    from twinsim.shape.regions import MODEL_LEVELS, THORACIC_TEMPLATE_LEVEL
    from twinsim.shape.sources import load_ctacardio

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ShapeDataError(f"shape data folder not found: {data_dir}")
    reference = load_template(data_dir)
    for name in models:
        shapes = load_training_shapes(data_dir, name)
        persons = [s.person for s in shapes]
        log.info(f"building {name} model from {len(shapes)} shapes of {len(set(persons))} people: "
              f"{', '.join(s.name for s in shapes)}")
        t0 = time.perf_counter()
        # The example CT is test data: refuse any training shape that is one of its vertebrae.
        held_out = check_held_out(((s.name, SurfaceMesh(s.vertices_mm, s.faces)) for s in shapes),
                                  _example_neighbours(MODEL_LEVELS[name]))
        log.info(f"held-out check: every shape at least {min(held_out.values()):.2f} mm from the example CT's vertebrae")
        if name in THORACIC_TEMPLATE_LEVEL:
            template = remeshed_template(load_ctacardio(data_dir, (THORACIC_TEMPLATE_LEVEL[name],))[0], reference)
        else:
            template = reference
        modes = supported_modes(persons, [s.level for s in shapes], len(shapes))
        built = build_model(shapes, template, BuildParams(max_modes=modes))
        annotations, paths = annotate(built.mean_mm, built.faces, model_variants(built.mean_mm, built.modes, built.std_mm))
        files = sorted(p for p in data_dir.rglob("*") if p.is_file()
                       and p.suffix in (".ply", ".obj", ".csv", ".json", ".stl", ".gz"))
        model = ShapeModel(
            name=name, mean_mm=built.mean_mm, faces=built.faces, modes=built.modes, std_mm=built.std_mm,
            variance_ratio=built.variance_ratio, annotations=annotations, paths=paths,
            training_names=built.training_names, training_levels=built.training_levels,
            training_vertices_mm=built.training_vertices_mm, T_model_raw=built.T_model_raw,
            training_coeffs=built.training_coeffs,
            provenance={
                "command": f"twinsim ssm build --data <shared data> -o {out_dir} --model {name}",
                "frame": "RAS millimetres (x right, y anterior, z superior), the anatomical frame of template ref_20 "
                         "(a thoracic model's template is rigidly aligned to it)",
                "template": template.name,
                "levels": list(MODEL_LEVELS[name]),
                "training_persons": persons,
                "modes_supported": f"min(15, shapes - 1, (people - 1) + (levels - 1)) = {modes}",
                "held_out_check_mm": held_out,
                "sources": sorted({s.source for s in shapes}),
                "licences": [LICENCES[s] for s in sorted({s.source for s in shapes})],
                "licence": LICENCE if any(s.source in ("verse", "verse004") for s in shapes) else "MIT",
                "data_sha256": _digest(files),
                "params": params_dict(built.params),
                "build_seconds": round(time.perf_counter() - t0, 1),
                "python": platform.python_version(),
            },
        )
        raw = {s.name: SurfaceMesh(s.vertices_mm, s.faces) for s in shapes}
        corr = correspondence_errors(model, raw)
        model.provenance["correspondence_mean_mm"] = corr
        path = model.save(Path(out_dir) / f"ssm_{name}.npz")
        rms = model.std_mm / np.sqrt(len(model.mean_mm))
        log.info(table(["mode", "variance %", "cumulative %", "RMS vertex shift at 1 SD (mm)"],
                    [[k + 1, f"{100 * v:.1f}", f"{100 * c:.1f}", f"{s:.2f}"]
                     for k, (v, c, s) in enumerate(zip(model.variance_ratio, np.cumsum(model.variance_ratio), rms, strict=True))]))
        log.info(f"correspondence: registered template to raw surface, mean distance {np.mean(list(corr.values())):.3f} mm "
              f"(worst {max(corr.values()):.3f} mm, {max(corr, key=corr.get)})")
        log.info(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {model.provenance['build_seconds']:.0f} s")
    return 0


def reannotate(folder: Path, models: list[str]) -> int:
    """Recompute landmarks and paths of existing models (after the annotation rules change)."""
    from twinsim.shape.annotations import annotate, model_variants

    for name in models:
        m = load_model(name, folder)
        m.annotations, m.paths = annotate(m.mean_mm, m.faces, model_variants(m.mean_mm, m.modes, m.std_mm))
        path = m.save(Path(folder) / f"ssm_{name}.npz")
        log.info(f"re-annotated {path}: {', '.join(sorted(m.annotations))}")
    return 0


def evaluate(models: list[str], targets: dict[str, SurfaceMesh]) -> dict[str, Any]:
    """Each model's quality; ``targets``: the example CT's complete vertebrae (held out), fitted where a
    model covers their level."""
    from twinsim.shape.quality import compactness, generalization, representation_floor, specificity
    from twinsim.shape.regions import MODEL_LEVELS

    results = {}
    for name in models:
        m = load_model(name)
        persons = m.provenance.get("training_persons", m.training_names)
        r: dict[str, Any] = {"modes": m.n_modes, "training_shapes": len(m.training_names),
                             "people": len(set(persons)), "levels": sorted(set(m.training_levels)),
                             "variance_ratio": m.variance_ratio.tolist(),
                             "compactness": compactness(m), "generalization": generalization(m),
                             "specificity": specificity(m),
                             "fit_to_example": {lv: representation_floor(m, t) for lv, t in targets.items()
                                                if lv in MODEL_LEVELS[name]}}
        results[name] = r
    return results


def format_eval(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results.items():
        g, s = r["generalization"], r["specificity"]
        fits = r["fit_to_example"]
        rows.append([name, f"{r['training_shapes']} ({r['people']} people)", r["modes"],
                     " ".join(f"{100 * v:.0f}" for v in r["variance_ratio"]),
                     f"{g['mean_mm'][-1]:.2f} / {g['rms_mm'][-1]:.2f} ({g['modes'][-1]} modes, {g['scheme']})",
                     f"{s['mean_mm'][-1]:.2f}",
                     ", ".join(f"{lv} {f['mean_mm']:.2f}/{f['p95_mm']:.2f}" for lv, f in fits.items()) or "-"])
    return table(["model", "shapes", "modes", "variance % per mode", "generalization mean/RMS mm", "specificity mm",
                  "fit to the example CT (held out) mean/p95 mm"], rows)


def plot_eval(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, r in results.items():
        k = np.arange(1, len(r["compactness"]) + 1)
        ax[0].plot(k, 100 * np.asarray(r["compactness"]), "o-", label=name)
        g = r["generalization"]
        ax[1].plot(g["modes"], g["mean_mm"], "o-", label=f"{name} mean")
        ax[1].plot(g["modes"], g["rms_mm"], "s--", label=f"{name} RMS")
        s = r["specificity"]
        ax[2].errorbar(s["modes"], s["mean_mm"], yerr=s["sd_mm"], fmt="o-", capsize=2, label=name)
    ax[0].set(title="compactness", xlabel="modes", ylabel="cumulative variance (%)")
    ax[1].set(title="generalization (leave one person out)", xlabel="modes", ylabel="surface distance (mm)")
    ax[2].set(title="specificity (200 samples)", xlabel="modes", ylabel="distance to nearest training shape (mm)")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
    return path


def show(name: str, path: Path, modes: int = 3) -> Path:
    """Mean +/- 2 SD along the first modes, lateral and top views, with landmarks and paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    m = load_model(name)
    modes = min(modes, m.n_modes)
    rows = [(f"mode {k + 1} {sd:+d} SD", np.eye(m.n_modes)[k] * sd) for k in range(modes) for sd in (-2, 2)]
    rows.insert(0, ("mean", np.zeros(m.n_modes)))
    views = (("top (superior)", 90, -90), ("lateral (right)", 0, 0), ("oblique", 25, -120))
    fig = plt.figure(figsize=(4 * len(views), 3.6 * len(rows)))
    light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    for r, (label, b) in enumerate(rows):
        v = m.instance(b)
        tri = v[m.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        shade = 0.35 + 0.65 * np.clip(n @ light, 0, 1)
        colours = np.c_[np.outer(shade, [0.93, 0.9, 0.8]), np.full(len(shade), 0.35)]  # translucent: paths show through
        pts = m.annotation_points(v)
        for c, (vname, elev, azim) in enumerate(views):
            ax = fig.add_subplot(len(rows), len(views), r * len(views) + c + 1, projection="3d")
            ax.add_collection3d(Poly3DCollection(tri, facecolors=colours, edgecolor="none"))
            for side, (e, i, t) in m.paths.items():
                outward = (pts[e] - pts[t]) / np.linalg.norm(pts[e] - pts[t])
                line = np.array([pts[e] + 15.0 * outward, pts[t]])  # the needle, from 15 mm outside to the target
                ax.plot(*line.T, color="tab:red" if side == "left" else "tab:blue", lw=2.5, zorder=10)
                ax.scatter(*np.array([pts[e], pts[i], pts[t]]).T, color="k", s=8)
            others = [p for k2, p in pts.items() if "path" not in k2 and "pedicle" not in k2]
            ax.scatter(*np.array(others).T, color="tab:green", s=12)
            lim = np.abs(m.mean_mm).max() * 1.05
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(elev=elev, azim=azim)
            ax.set_axis_off()
            ax.set_title(f"{label}, {vname}", fontsize=9)
    fig.suptitle(f"shape model '{name}': paths left (red) / right (blue), landmarks (green); RAS, mm", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    write_figure(fig, path, dpi=80)
    return path


def example_vertebrae(levels: list[str] | None = None) -> dict[str, SurfaceMesh]:
    """The example CT's complete vertebrae (held out of every training set), ct frame (RAS, mm)."""
    from twinsim.anatomy.example import example_patient
    from twinsim.anatomy.patient import build_patient

    ex = example_patient()
    patient = build_patient(ex.ct, ex.labels, ex.label_table)
    return {lv: patient.vertebra(lv) for lv in patient.vertebrae if levels is None or lv in levels}
