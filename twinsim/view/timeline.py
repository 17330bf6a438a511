"""The twin's state over a procedure: samples at a steady rate of tracker time, step events, and layers.

A sample is what the twin knew at one tracker frame: the operation robot's joint readings and every
tracked tool's pose in the patient reference frame ``ref`` (NaN where the tracker did not see it).
Layers are what changes only when a step ends (the calibrated robot base, the camera, the
reconstructed vertebra, both planned paths, the surveyed envelope and table, the navigation robot,
the C-arm's shape); each holds its versions with the sample from which each one stands.

Saved as one compressed ``.npz`` (format ``twinsim-twin-timeline/1``): arrays only, the index as JSON
text, written to a temporary file and moved into place, so a killed rehearsal leaves none half-written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinsim.errors import TwinsimError

FORMAT = "twinsim-twin-timeline/1"
FILE_NAME = "twin_timeline.npz"


class TimelineError(TwinsimError, ValueError):
    """A timeline file that is missing, of another format, or damaged."""


@dataclass
class Event:
    sample: int  # the first sample at or after the event
    t_s: float
    step: str
    title: str
    state: str  # "running", "done" or "failed"
    summary: str = ""  # the step's figures in one line, or its error


@dataclass
class Timeline:
    tools: list[str]
    rate_hz: float
    rig: str = ""
    t_s: list[float] = field(default_factory=list)
    q_rad: list[np.ndarray] = field(default_factory=list)  # (7,) each, NaN before the first reading
    T_ref_tools_mm: list[np.ndarray] = field(default_factory=list)  # (K, 4, 4) each, NaN where not seen
    T_cam_ref_mm: list[np.ndarray] = field(default_factory=list)  # (4, 4) each: the reference as the camera saw it (NaN: not)
    events: list[Event] = field(default_factory=list)
    layers: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t_s)

    def add_sample(self, t_s: float, q_rad: np.ndarray, T_ref_tools_mm: np.ndarray, T_cam_ref_mm: np.ndarray | None = None) -> int:
        self.t_s.append(float(t_s))
        self.q_rad.append(np.asarray(q_rad, dtype=np.float64).copy())
        self.T_ref_tools_mm.append(np.asarray(T_ref_tools_mm, dtype=np.float64).copy())
        self.T_cam_ref_mm.append(np.full((4, 4), np.nan) if T_cam_ref_mm is None else np.asarray(T_cam_ref_mm, dtype=np.float64).copy())
        return len(self.t_s) - 1

    def set_layer(self, name: str, arrays: dict[str, np.ndarray]) -> bool:
        """A layer's new version from the next sample on; False (nothing stored) when it is the version already held."""
        versions = self.layers.setdefault(name, [])
        new = {k: np.asarray(v) for k, v in arrays.items()}
        if versions and _same(versions[-1][1], new):
            return False
        versions.append((len(self.t_s), new))
        return True

    def layer_at(self, name: str, sample: int) -> dict[str, np.ndarray] | None:
        """The version of a layer that stood at ``sample`` (None before its first)."""
        held = None
        for k, arrays in self.layers.get(name, []):
            if k <= sample:
                held = arrays
        return held

    def steps_at(self, sample: int) -> list[Event]:
        """Each step run up to ``sample`` with its latest state, in the order the steps began."""
        out: list[Event] = []
        for e in self.events:
            if e.sample > sample:
                break
            same = [i for i, x in enumerate(out) if x.step == e.step]
            if e.state == "running" or not same:
                out.append(e)
            else:
                out[same[-1]] = e
        return out

    # ---- file -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        index: dict[str, Any] = {"format": FORMAT, "tools": self.tools, "rate_hz": self.rate_hz, "rig": self.rig,
                                 "events": [vars(e) for e in self.events], "layers": {}}
        arrays: dict[str, np.ndarray] = {
            "t_s": np.asarray(self.t_s, dtype=np.float64),
            "q_rad": np.asarray(self.q_rad, dtype=np.float64).reshape(-1, 7),
            "T_ref_tools_mm": np.asarray(self.T_ref_tools_mm, dtype=np.float32).reshape(-1, len(self.tools), 4, 4),
            "T_cam_ref_mm": np.asarray(self.T_cam_ref_mm, dtype=np.float64).reshape(-1, 4, 4),
        }
        for name, versions in self.layers.items():
            index["layers"][name] = []
            for i, (k, parts) in enumerate(versions):
                index["layers"][name].append({"sample": k, "arrays": sorted(parts)})
                for part, a in parts.items():
                    arrays[f"layer/{name}/{i}/{part}"] = a
        arrays["index"] = np.array(json.dumps(index))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub takes the first ** for allow_pickle
        os.replace(tmp, path)
        return path


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f" and b[k].dtype.kind == "f")
        for k in a)


def load_timeline(path: str | Path) -> Timeline:
    """A saved timeline; a folder means the timeline a rehearsal wrote into it."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAME
    if not p.is_file():
        raise TimelineError(f"no twin timeline at {p}: replay needs a rehearsal's output folder (it writes {FILE_NAME})")
    try:
        with np.load(p, allow_pickle=False) as z:
            index = json.loads(str(z["index"]))
            if index.get("format") != FORMAT:
                raise TimelineError(f"{p} is {index.get('format')!r}, not {FORMAT}")
            tl = Timeline(list(index["tools"]), float(index["rate_hz"]), str(index.get("rig", "")))
            tl.t_s = z["t_s"].tolist()
            tl.q_rad = list(z["q_rad"])
            tl.T_ref_tools_mm = list(z["T_ref_tools_mm"].astype(np.float64))
            tl.T_cam_ref_mm = list(z["T_cam_ref_mm"])
            tl.events = [Event(**e) for e in index["events"]]
            for name, versions in index["layers"].items():
                tl.layers[name] = [(int(v["sample"]), {part: z[f"layer/{name}/{i}/{part}"] for part in v["arrays"]})
                                   for i, v in enumerate(versions)]
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, TimelineError):
            raise
        raise TimelineError(f"{p} is not a readable twin timeline ({type(exc).__name__}: {exc})") from None
    return tl
