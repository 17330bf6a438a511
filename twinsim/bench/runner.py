"""One runner for a bench's independent cases: in this process, or as Ray tasks on this machine or a cluster.

A bench hands the runner a *context* (what every case of one run shares: the patient's files, the
level, the settings, as plain data) and its *cases* (each a small JSON-able spec with a seed). A
worker builds its state from the context once (the CT loaded, the patient meshed or read from the
cache, the shape model and the renderer) and keeps it for every case it is given; the case itself
only renders, fits and scores. Each case's record is written as it finishes to the records folder,
under the case's content key (a digest of the context, the spec and the twinsim version), so that
``--resume`` skips the cases already done with the same inputs and a killed run goes on where it
stopped.

Every case runs on one torch thread, serially as on Ray, so that its record does not depend on the backend.

Failures: a case whose worker dies (killed, out of memory) is retried once by Ray (``max_retries``);
a case that raises is tried once more too (``retry_exceptions``). A case that fails twice is
recorded as failed with its error and the run goes on. The serial path does the same.

Data to remote workers: the context goes through Ray's object store once per run (it is small);
the files it names (the CT, its labels, the shape models in the package) must be readable at the
same path on every node: a shared folder, or the same set-up on each node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from twinsim import __version__
from twinsim.errors import TwinsimError
from twinsim.report import write_json

Setup = Callable[[dict[str, Any]], Any]
CaseFn = Callable[[Any, dict[str, Any]], dict[str, Any]]
RECORD_FORMAT = "twinsim-case-record/1"
CONNECT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 10.0
# Every case runs on one torch thread, serial or on Ray: a reduction split over more threads sums in another order,
# and the fits amplify those last bits, so the records would depend on the backend. Measured on 2 cores, a bench
# plan case on 1 thread took no longer than on 2; a machine's cores are used by running cases side by side.
CASE_THREADS = 1


class RunnerError(TwinsimError, ValueError):
    """The runner cannot start: a cluster that cannot be reached, a bad worker count, an unreadable records folder."""


@dataclass(frozen=True)
class RunnerSettings:
    """``workers``: processes on this machine (<= 1 and no address: serial, in this process, without Ray).
    ``address``: an existing Ray cluster (``HOST:PORT`` or ``ray://HOST:PORT``); ``RAY_ADDRESS`` when unset.
    ``records``: where each case's record is written (None: nowhere). ``resume``: skip the cases whose record
    is there with the same content key."""

    workers: int = 1
    address: str | None = None
    records: Path | None = None
    resume: bool = False
    max_retries: int = 1
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise RunnerError(f"--workers must be >= 0, got {self.workers}")
        if self.resume and self.records is None:
            raise RunnerError("--resume needs a records folder (the DIR of an earlier run)")

    @property
    def cluster_address(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None

    @property
    def uses_ray(self) -> bool:
        return self.cluster_address is not None or self.workers > 1

    def describe(self) -> str:
        where = (f"Ray at {self.cluster_address}" if self.cluster_address else
                 f"{self.workers} Ray workers" if self.uses_ray else "serial")
        return where + (f"; records in {self.records}" if self.records is not None else "")


SERIAL = RunnerSettings()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class CaseResult:
    index: int
    key: str
    record: dict[str, Any] | None  # None when the case failed twice
    error: str | None = None
    attempts: int = 1
    case_s: float = 0.0  # inside the worker, state building excluded
    setup_s: float = 0.0  # this worker's state built for this case (0 when it was kept from an earlier case)
    worker: str = ""
    resumed: bool = False
    max_rss_mb: float = 0.0  # the worker process's peak resident memory so far (the driver's, serially)

    @property
    def failed(self) -> bool:
        return self.record is None


@dataclass
class RunReport:
    results: list[CaseResult]
    wall_s: float
    workers: int
    backend: str  # "serial" or "ray"
    address: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> list[dict[str, Any] | None]:
        return [r.record for r in self.results]

    def summary(self) -> dict[str, Any]:
        ran = [r for r in self.results if not r.resumed]
        case_s = sorted(r.case_s for r in ran if not r.failed)
        med = case_s[len(case_s) // 2] if case_s else None
        return {"backend": self.backend, "workers": self.workers, "address": self.address, "cases": len(self.results),
                "ran": len(ran), "resumed": len(self.results) - len(ran), "failed": sum(r.failed for r in self.results),
                "wall_s": self.wall_s, "case_s_median": med,
                "setup_s_total": sum(r.setup_s for r in ran),
                "worker_max_rss_mb": max((r.max_rss_mb for r in ran), default=None), **self.stats}


def content_key(bench: str, context: dict[str, Any], spec: dict[str, Any]) -> str:
    """What a case's record depends on: the bench, the shared inputs (files by their digest), the case and the code.
    Entries whose names start with ``_`` are left out: in the context, what the driver derives from the others; in a
    spec, where the case writes its files (a record does not depend on it)."""
    shared = {k: v for k, v in context.items() if not k.startswith("_")}
    own = {k: v for k, v in spec.items() if not k.startswith("_")}
    blob = json.dumps({"bench": bench, "context": shared, "spec": own, "twinsim": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- the worker side: state kept per process ------------------------------------------------------
_STATE: dict[str, Any] = {}


def release_state() -> None:
    """Drop the state kept in this process, closing what has a ``close`` (a simulated room and its physics server)."""
    for state in _STATE.values():
        close = getattr(state, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    _STATE.clear()


def _state(setup: Setup, context: dict[str, Any], ckey: str) -> tuple[Any, float]:
    if ckey in _STATE:
        return _STATE[ckey], 0.0
    t = time.perf_counter()
    release_state()  # one run's state at a time: a CT, a renderer and a model are a few hundred MB; a room holds a server
    _STATE[ckey] = setup(context)
    return _STATE[ckey], time.perf_counter() - t


def execute(fn: CaseFn, setup: Setup, context: dict[str, Any], ckey: str, spec: dict[str, Any],
            threads: int | None = None) -> dict[str, Any]:
    """One case in this process: the worker's state (built once), then the case, timed apart."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    state, setup_s = _state(setup, context, ckey)
    t = time.perf_counter()
    record = fn(state, spec)
    return {"record": record, "case_s": time.perf_counter() - t, "setup_s": setup_s, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


# ---- the driver side ---------------------------------------------------------------------------------
def _record_path(records: Path, index: int, key: str) -> Path:
    return records / f"case-{index:04d}-{key[:16]}.json"


def _load_record(records: Path, index: int, key: str) -> dict[str, Any] | None:
    path = _record_path(records, index, key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged record is run again, not trusted
    return data if data.get("format") == RECORD_FORMAT and data.get("key") == key else None


def _save(records: Path | None, res: CaseResult) -> None:
    if records is None or res.failed:
        return  # a failed case is tried again on --resume
    write_json(_record_path(records, res.index, res.key),
               {"format": RECORD_FORMAT, "key": res.key, "index": res.index, "record": res.record,
                "case_s": res.case_s, "setup_s": res.setup_s, "worker": res.worker, "attempts": res.attempts,
                "max_rss_mb": res.max_rss_mb})


def check_address(address: str) -> None:
    """A cluster that cannot be reached is said in one line within seconds, not after Ray's own long retries."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RunnerError(f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT) of a Ray cluster's head")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RunnerError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc} (is `ray start --head` "
                          "running there, and is the port open?)") from None


def connect(s: RunnerSettings) -> bool:
    """Ray started here (``workers`` processes) or joined at the cluster's address; False when it already was."""
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}}
    address = s.cluster_address
    if address:
        check_address(address)
        # Ray retries a head that answers but is not one for 20 s, a second at a time; a real one answers in 1-3 s.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "5")
        failure: list[BaseException] = []

        def join() -> None:
            try:
                ray.init(address=address, log_to_driver=False, runtime_env=env, configure_logging=False)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller below)
                failure.append(exc)

        # Something that accepts connections but never speaks Ray's protocol keeps ray.init waiting for minutes.
        t = threading.Thread(target=join, daemon=True, name="ray-join")
        t.start()
        t.join(JOIN_TIMEOUT_S)
        if t.is_alive():
            raise RunnerError(f"cannot join a Ray cluster at {address}: no Ray head answered within {JOIN_TIMEOUT_S:.0f} s")
        if failure:
            raise RunnerError(f"cannot join a Ray cluster at {address}: {str(failure[0]).splitlines()[0]}") from None
    else:
        ray.init(num_cpus=s.workers, include_dashboard=False, log_to_driver=False, runtime_env=env, configure_logging=False)
    return True


def _import(module: str) -> str:
    import importlib

    importlib.import_module(module)
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def session(s: RunnerSettings, warm: Sequence[str] = ()) -> Iterator[None]:
    """Ray up for a whole bench (several ``run_cases`` calls), its workers importing ``warm`` while the driver
    prepares the first run's context (the truth's fit, the patient); shut down at the end if it was started here."""
    if not s.uses_ray:
        yield
        return
    import ray

    started = connect(s)
    try:
        if warm:
            task = ray.remote(num_cpus=1)(_import)
            for _ in range(max(s.workers, 1)):
                for m in warm:
                    task.remote(m)  # not waited for: a case queued behind it simply starts later
        yield
    finally:
        if started:
            ray.shutdown()


def _run_serial(fn: CaseFn, setup: Setup, context: dict[str, Any], ckey: str,
                todo: list[tuple[int, str, dict[str, Any]]], s: RunnerSettings, bar: tqdm,
                on_result: Callable[[CaseResult], None]) -> None:
    import torch

    threads = torch.get_num_threads()  # the caller's, given back after the cases' one thread
    try:
        for index, key, spec in todo:
            error, out, attempts = None, None, 0
            while out is None and attempts <= s.max_retries:
                attempts += 1
                try:
                    out = execute(fn, setup, context, ckey, spec, CASE_THREADS)
                except Exception as exc:  # noqa: BLE001 (a case that fails is recorded, the run goes on)
                    error = f"{type(exc).__name__}: {exc}"
            res = (CaseResult(index, key, out["record"], None, attempts, out["case_s"], out["setup_s"], out["worker"],
                              max_rss_mb=out["max_rss_mb"]) if out else CaseResult(index, key, None, error, attempts))
            on_result(res)
            bar.update(1)
    finally:
        torch.set_num_threads(threads)
        release_state()  # the driver goes on with other work: the cases' rooms and volumes are not kept


def _run_ray(fn: CaseFn, setup: Setup, context: dict[str, Any], ckey: str, todo: list[tuple[int, str, dict[str, Any]]],
             s: RunnerSettings, bar: tqdm, on_result: Callable[[CaseResult], None]) -> dict[str, Any]:
    import ray

    t0 = time.perf_counter()
    started = connect(s)
    stats = {"ray_init_s": time.perf_counter() - t0} if started else {}  # else started by the bench's session
    try:
        task = ray.remote(num_cpus=1, max_retries=s.max_retries, retry_exceptions=True)(execute)
        ctx_ref = ray.put(context)
        pending = {task.remote(fn, setup, ctx_ref, ckey, spec, CASE_THREADS): (index, key) for index, key, spec in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            index, key = pending.pop(ref)
            try:
                out = ray.get(ref)
                res = CaseResult(index, key, out["record"], None, 1, out["case_s"], out["setup_s"], out["worker"],
                                 max_rss_mb=out["max_rss_mb"])
            except Exception as exc:  # noqa: BLE001 (failed twice: recorded, the run goes on)
                cause = getattr(exc, "cause", None) or exc
                res = CaseResult(index, key, None, f"{type(cause).__name__}: {str(cause).splitlines()[-1] if str(cause) else ''}",
                                 s.max_retries + 1)
            on_result(res)
            bar.update(1)
    finally:
        if started:
            ray.shutdown()
    return stats


def run_cases(bench: str, fn: CaseFn, setup: Setup, context: dict[str, Any], specs: Sequence[dict[str, Any]],
              settings: RunnerSettings = SERIAL, desc: str | None = None,
              on_result: Callable[[CaseResult], None] | None = None) -> RunReport:
    """Every case of ``specs`` through ``fn(state, spec)``, ``state = setup(context)`` built once per worker.
    Results come back in case order, whatever order they finished in; ``on_result`` sees each as it finishes."""
    s = settings
    if s.records is not None:
        try:
            s.records.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunnerError(f"cannot write case records to {s.records}: {exc.strerror or exc}") from None
    ckey = content_key(bench, context, {})
    keys = [content_key(bench, context, spec) for spec in specs]
    results: dict[int, CaseResult] = {}
    todo = []
    for i, (key, spec) in enumerate(zip(keys, specs, strict=True)):
        old = _load_record(s.records, i, key) if (s.resume and s.records is not None) else None
        if old is not None:
            results[i] = CaseResult(i, key, old["record"], None, old.get("attempts", 1), old.get("case_s", 0.0),
                                    old.get("setup_s", 0.0), old.get("worker", ""), resumed=True)
        else:
            todo.append((i, key, dict(spec)))

    def finished(res: CaseResult) -> None:
        results[res.index] = res
        _save(s.records, res)
        if on_result is not None:
            on_result(res)

    if s.cluster_address is None and s.workers > len(todo):
        s = replace(s, workers=max(len(todo), 1))  # no idle processes; one case left runs here, without Ray
    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc or bench, unit="case",
              disable=s.progress is False) as bar:
        if todo and s.uses_ray:
            stats = _run_ray(fn, setup, context, ckey, todo, s, bar, finished)
        elif todo:
            _run_serial(fn, setup, context, ckey, todo, s, bar, finished)
    backend = "ray" if s.uses_ray else "serial"
    return RunReport([results[i] for i in range(len(specs))], time.perf_counter() - t0, max(s.workers, 1), backend,
                     s.cluster_address, stats)
