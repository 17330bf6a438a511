"""The patient suite file (``twinsim-patient-suite/1``): which CTs, which targets, which degradations.

```yaml
format: twinsim-patient-suite/1
patients:
  - name: example-3mm
    source: example              # example | tptbox | {ct: F, labels: F, label_table: F (optional)}
    degrade: {slice_mm: 3.0, inplane_mm: 0.9, cut_level: T12, body_shell_mm: 30}   # all optional
    targets: [L1]
    procedure: rehearse          # rehearse (default): the whole procedure in a room; plan: reconstruction and plan only
    cannula_mm: {T12: 3.0}       # optional: the instrument per target (default: the planner's, 5 mm)
```

Paths are relative to the suite file. Errors name the file and the key. Each patient's files are
resolved (and a degraded variant written to the cache) only when the bench comes to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from twinsim.anatomy.degrade import Degradation
from twinsim.anatomy.labels import normalise_level
from twinsim.errors import TwinsimError
from twinsim.paths import bundled
from twinsim.report import read_yaml_mapping, validation_problems
from twinsim.sim.scene_schema import PatientFiles, _Strict

FORMAT = "twinsim-patient-suite/1"
DEFAULT_SUITE = bundled("scenarios") / "patients" / "suite.yaml"


class SuiteError(TwinsimError, ValueError):
    """The suite file is missing, malformed, or names something that does not exist."""


class _Degrade(_Strict):
    slice_mm: float | None = Field(default=None, gt=0)
    inplane_mm: float | None = Field(default=None, gt=0)
    cut_level: str | None = None
    cut_side: Literal["superior", "inferior"] = "superior"
    body_shell_mm: float | None = Field(default=None, gt=0)
    shell_hu: float = -50.0


class _Entry(_Strict):
    name: str = Field(min_length=1)
    source: Literal["example", "tptbox"] | PatientFiles
    targets: list[str] = Field(min_length=1)
    degrade: _Degrade = _Degrade()
    procedure: Literal["rehearse", "plan"] = "rehearse"
    cannula_mm: dict[str, float] = {}  # target -> the instrument's diameter where it is not the planner's default


class _Suite(_Strict):
    format: Literal["twinsim-patient-suite/1"]
    patients: list[_Entry] = Field(min_length=1)


@dataclass(frozen=True)
class SuitePatient:
    name: str
    source: str  # "example", "tptbox" or "files"
    targets: list[str]
    degradation: Degradation
    procedure: str
    ct: Path | None = None  # for "files"
    labels: Path | None = None
    label_table: Path | None = None
    describe: str = field(default="")
    cannula_mm: dict[str, float] = field(default_factory=dict)

    def files(self) -> tuple[Path, Path, Path | None]:
        """``(ct, labels, label_table)``, the degraded variant written to the cache on first use."""
        from twinsim.anatomy.degrade import degraded_patient_files

        if self.source == "example":
            from twinsim.anatomy.example import example_patient

            ex = example_patient()
            ct, labels, table = ex.ct, ex.labels, ex.label_table
        elif self.source == "tptbox":
            from twinsim.anatomy.tptbox_sample import tptbox_sample

            tp = tptbox_sample()
            ct, labels, table = tp.ct, tp.labels, tp.label_table
        else:
            assert self.ct is not None and self.labels is not None
            ct, labels, table = self.ct, self.labels, self.label_table
        ct, labels = degraded_patient_files(ct, labels, table, self.degradation)
        return ct, labels, table


def load_suite(path: str | Path | None = None) -> list[SuitePatient]:
    path = Path(path) if path else DEFAULT_SUITE
    data = read_yaml_mapping(path, SuiteError, "patient suite file", f"format: {FORMAT}, patients: [...]")
    try:
        suite = _Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{path}: {validation_problems(exc)}") from None
    out, seen = [], set()
    for i, e in enumerate(suite.patients):
        key = f"{path}: patients[{i}] ({e.name})"
        if e.name in seen:
            raise SuiteError(f"{key}: the name is used twice")
        seen.add(e.name)
        targets = []
        for t in e.targets:
            lvl = normalise_level(t)
            if lvl is None:
                raise SuiteError(f"{key}.targets: {t!r} is not a vertebra name (e.g. L1, T12)")
            targets.append(lvl)
        try:
            deg = Degradation(**e.degrade.model_dump())
        except ValueError as exc:
            raise SuiteError(f"{key}.degrade: {exc}") from None
        files: dict[str, Path | None] = {}
        if isinstance(e.source, PatientFiles):
            for k in ("ct", "labels", "label_table"):
                v = getattr(e.source, k)
                p = None if v is None else Path(v).expanduser()
                p = p if p is None or p.is_absolute() else path.parent / p
                if p is not None and not p.is_file():
                    raise SuiteError(f"{key}.source.{k}: file not found: {p}")
                files[k] = p
        source = e.source if isinstance(e.source, str) else "files"
        cannula = {}
        for t, mm in e.cannula_mm.items():
            lvl = normalise_level(t)
            if lvl not in targets:
                raise SuiteError(f"{key}.cannula_mm: {t!r} is not one of its targets {targets}")
            if not 0.5 <= mm <= 10.0:
                raise SuiteError(f"{key}.cannula_mm.{t}: {mm} mm is no vertebroplasty cannula (0.5-10 mm)")
            cannula[lvl] = float(mm)
        out.append(SuitePatient(e.name, source, targets, deg, e.procedure, files.get("ct"), files.get("labels"),
                                files.get("label_table"), deg.describe(), cannula))
    return out


def scene_for(base_scene: Path, ct: Path, labels: Path, label_table: Path | None, target: str, path: Path,
              edits: dict[str, object] | None = None) -> Path:
    """A scene file that is ``base_scene`` with only its patient swapped: what a user who brings a CT writes.

    ``edits``: further keys to set, dotted (``{"carm.calibration_shots": "over_patient"}``).
    """
    data = read_yaml_mapping(base_scene, SuiteError, "scene file", "name, patient, table, robots, ...")
    source = {"ct": str(Path(ct).resolve()), "labels": str(Path(labels).resolve())}
    if label_table is not None:
        source["label_table"] = str(Path(label_table).resolve())
    data["patient"]["source"] = source
    data["patient"]["target_level"] = target
    for dotted, value in (edits or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
