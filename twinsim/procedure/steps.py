"""Steps with states, each writing what it produced and its figures; the log is rewritten after every change.

A step runs ``pending -> running -> done | failed``; a failure records the error and stops
the procedure cleanly (:class:`StepFailed`), so what was done stays on disk and the last
state is readable in ``rehearsal.json`` even after a crash.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twinsim.report import write_json

FORMAT = "twinsim-rehearsal/1"


class StepFailed(RuntimeError):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step '{step}' failed: {cause}")
        self.step, self.cause = step, cause


@dataclass
class StepRecord:
    name: str
    title: str
    state: str = "pending"  # pending, running, done, failed
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None


@dataclass
class ProcedureLog:
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    outcome: str = "running"
    recommendation: dict[str, Any] | None = None
    echo: Callable[[str], None] = print
    on_step: Callable[[str, str], None] | None = None  # (step name, "start" | "end"): scripted scenarios hook here

    def write(self) -> Path:
        return write_json(self.path, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.meta, "outcome": self.outcome, "recommendation": self.recommendation,
                "steps": [asdict(s) for s in self.steps],
                "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}

    def run(self, name: str, title: str, fn: Callable[[StepRecord], dict[str, Any] | None],
            catch: tuple[type[BaseException], ...] = (Exception,)) -> StepRecord:
        rec = StepRecord(name, title, "running")
        self.steps.append(rec)
        self.write()
        n = len(self.steps)
        self.echo(f"[{n:>2}] {title} ...")
        t0 = time.perf_counter()
        try:
            if self.on_step is not None:
                self.on_step(name, "start")
            rec.figures.update(fn(rec) or {})
            rec.state = "done"
        except catch as exc:
            rec.state, rec.error, rec.error_type = "failed", str(exc), type(exc).__name__
            raise StepFailed(name, exc) from exc
        finally:
            rec.seconds = time.perf_counter() - t0
            self.write()
            if self.on_step is not None:
                self.on_step(name, "end")
            self.echo(f"[{n:>2}] {title}: {rec.state} in {rec.seconds:.1f} s" + (f" - {rec.error}" if rec.error else ""))
        return rec
