"""The procedure's steps, their states and its outcome, as types; the log is rewritten after every change.

A step runs ``pending -> running -> done | failed``; a failure records the error and stops
the procedure cleanly (:class:`StepFailed`), so what was done stays on disk and the last
state is readable in ``rehearsal.json`` even after a crash. The procedure ends
:attr:`Outcome.COMPLETED` or :attr:`Outcome.STOPPED` with a :class:`Stop` naming the step, the
reason and the error's type: readers compare these, never the text.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from twinsim.report import write_json

FORMAT = "twinsim-rehearsal/2"
log = logging.getLogger(__name__)


class Step(StrEnum):
    """The procedure's steps, in order (re-registration only when the patient reference moved)."""

    CALIBRATION = "calibration"
    XRAYS = "x-rays"
    LANDMARKS = "landmarks"
    RECONSTRUCTION = "reconstruction"
    PLAN = "plan"
    SURVEY = "survey"
    REACH = "reach"
    GUIDE_LEFT = "guide left"
    GUIDE_RIGHT = "guide right"
    REREGISTRATION = "re-registration"
    HOME = "robot home"
    VERIFICATION = "verification"


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # both guides placed
    STOPPED = "stopped"  # safely, at a step: see the log's ``stop``


@dataclass(frozen=True)
class Stop:
    """Where and why the procedure stopped."""

    step: str
    reason: str
    error_type: str


class StepFailed(RuntimeError):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step '{step}' failed: {cause}")
        self.step, self.cause = step, cause


@dataclass
class StepRecord:
    name: str
    title: str
    state: StepState = StepState.PENDING
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
    outcome: Outcome = Outcome.RUNNING
    stop: Stop | None = None
    recommendation: dict[str, Any] | None = None
    on_step: Callable[[str, str], None] | None = None  # (step name, "start" | "end"): scripted scenarios hook here

    def write(self) -> Path:
        return write_json(self.path, self.to_dict())

    @property
    def summary(self) -> str:
        """The outcome in words, for people."""
        if self.outcome is Outcome.COMPLETED:
            return "both guides placed"
        if self.stop is not None:
            return f"stopped at {self.stop.step}: {self.stop.reason}"
        return str(self.outcome)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.meta, "outcome": str(self.outcome), "summary": self.summary,
                "stop": asdict(self.stop) if self.stop else None, "recommendation": self.recommendation,
                "steps": [asdict(s) for s in self.steps],
                "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}

    def run(self, name: str, title: str, fn: Callable[[StepRecord], dict[str, Any] | None],
            catch: tuple[type[BaseException], ...] = (Exception,)) -> StepRecord:
        rec = StepRecord(name, title, StepState.RUNNING)
        self.steps.append(rec)
        self.write()
        n = len(self.steps)
        log.info(f"[{n:>2}] {title} ...")
        t0 = time.perf_counter()
        try:
            if self.on_step is not None:
                self.on_step(name, "start")
            rec.figures.update(fn(rec) or {})
            rec.state = StepState.DONE
        except catch as exc:
            rec.state, rec.error, rec.error_type = StepState.FAILED, str(exc), type(exc).__name__
            raise StepFailed(name, exc) from exc
        finally:
            rec.seconds = time.perf_counter() - t0
            self.write()
            if self.on_step is not None:
                self.on_step(name, "end")
            log.info(f"[{n:>2}] {title}: {rec.state} in {rec.seconds:.1f} s" + (f" - {rec.error}" if rec.error else ""))
        return rec
