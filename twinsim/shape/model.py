"""Vertebral statistical shape models: file format, instances, and a differentiable instance.

A model file (``.npz``) holds the mean surface, PCA modes with their standard deviations,
the corresponded training shapes, annotations as linear combinations of vertices (so they
move with any instance), and build provenance. Vertices are in the model frame: RAS
millimetres (x right, y anterior, z superior), centred near the vertebra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.errors import TwinsimError
from twinsim.paths import bundled

ASSETS_SSM = bundled("assets") / "ssm"


class ShapeModelError(TwinsimError, ValueError):
    """A model file is missing or malformed, or an instance request is impossible."""


@dataclass
class Annotation:
    """A point as weights over a few vertices: ``p = weights @ vertices[indices]``."""

    name: str
    indices: np.ndarray  # (k,)
    weights: np.ndarray  # (k,), sum 1

    def evaluate(self, vertices: np.ndarray) -> np.ndarray:
        return self.weights @ vertices[self.indices]


@dataclass
class ShapeModel:
    name: str
    mean_mm: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    modes: np.ndarray  # (K, V, 3), orthonormal
    std_mm: np.ndarray  # (K,)
    variance_ratio: np.ndarray  # (K,)
    annotations: dict[str, Annotation] = field(default_factory=dict)
    paths: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # side -> (entry, isthmus, target) names
    training_names: list[str] = field(default_factory=list)
    training_levels: list[str] = field(default_factory=list)
    training_vertices_mm: np.ndarray | None = None  # (n, V, 3)
    T_model_raw: np.ndarray | None = None  # (n, 4, 4)
    training_coeffs: np.ndarray | None = None  # (n, K) in SD
    provenance: dict = field(default_factory=dict)

    @property
    def n_modes(self) -> int:
        return int(len(self.std_mm))

    def instance(self, coeffs_sd: np.ndarray | None = None) -> np.ndarray:
        """Vertices (V, 3) for shape coefficients in standard deviations (missing ones are 0)."""
        b = np.zeros(self.n_modes)
        if coeffs_sd is not None:
            c = np.asarray(coeffs_sd, dtype=np.float64).ravel()
            if len(c) > self.n_modes:
                raise ShapeModelError(f"model {self.name} has {self.n_modes} modes, got {len(c)} coefficients")
            b[: len(c)] = c
        return self.mean_mm + np.tensordot(b * self.std_mm, self.modes, axes=1)

    def mesh(self, coeffs_sd: np.ndarray | None = None) -> SurfaceMesh:
        return SurfaceMesh(self.instance(coeffs_sd), self.faces.copy(), frame="ssm")

    def annotation_points(self, vertices: np.ndarray) -> dict[str, np.ndarray]:
        return {name: a.evaluate(vertices) for name, a in self.annotations.items()}

    def project(self, vertices: np.ndarray, n_modes: int | None = None) -> np.ndarray:
        """Least-squares coefficients (SD) of corresponded vertices in the model frame."""
        k = self.n_modes if n_modes is None else n_modes
        d = (np.asarray(vertices) - self.mean_mm).reshape(-1)
        return (self.modes[:k].reshape(k, -1) @ d) / self.std_mm[:k]

    # ---- file format ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from twinsim.report import atomic_output

        ann = {n: {"indices": a.indices.tolist(), "weights": a.weights.tolist()} for n, a in self.annotations.items()}
        meta = {"name": self.name, "annotations": ann, "paths": self.paths, "training_names": self.training_names,
                "training_levels": self.training_levels, "provenance": self.provenance}
        arrays = {"mean_mm": self.mean_mm.astype(np.float64), "faces": self.faces.astype(np.int32),
                  "modes": self.modes.astype(np.float64), "std_mm": self.std_mm, "variance_ratio": self.variance_ratio,
                  "meta_json": np.array(json.dumps(meta))}
        if self.training_vertices_mm is not None:
            arrays["training_vertices_mm"] = self.training_vertices_mm.astype(np.float32)
            arrays["T_model_raw"] = self.T_model_raw
            arrays["training_coeffs"] = self.training_coeffs
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ShapeModel:
        path = Path(path)
        if not path.is_file():
            raise ShapeModelError(f"shape model not found: {path} (build it with `twinsim ssm build`)")
        try:
            with np.load(path, allow_pickle=False) as d:
                meta = json.loads(str(d["meta_json"]))
                model = cls(
                    name=meta["name"], mean_mm=d["mean_mm"], faces=d["faces"], modes=d["modes"],
                    std_mm=d["std_mm"], variance_ratio=d["variance_ratio"],
                    annotations={n: Annotation(n, np.asarray(a["indices"]), np.asarray(a["weights"]))
                                 for n, a in meta["annotations"].items()},
                    paths={k: tuple(v) for k, v in meta["paths"].items()},
                    training_names=meta["training_names"], training_levels=meta["training_levels"],
                    provenance=meta["provenance"],
                )
                if "training_vertices_mm" in d:
                    model.training_vertices_mm = d["training_vertices_mm"].astype(np.float64)
                    model.T_model_raw = d["T_model_raw"]
                    model.training_coeffs = d["training_coeffs"]
        except (KeyError, ValueError, OSError) as exc:
            raise ShapeModelError(f"shape model {path} is malformed: {exc}") from exc
        return model


def load_model(name: str = "L1", folder: Path | None = None) -> ShapeModel:
    """A committed model by name (``L1``, ``L1-5``, ``T9-12``, ``T5-8``, ``T1-4``) or a path to an ``.npz``."""
    p = Path(name)
    if p.suffix == ".npz":
        return ShapeModel.load(p)
    return ShapeModel.load((folder or ASSETS_SSM) / f"ssm_{name}.npz")
