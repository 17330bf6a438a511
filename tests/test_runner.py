"""The bench runner: serial and on Ray workers with the same records, resumable, a killed worker retried once,
a case that fails twice recorded and the run going on, and an unreachable cluster said in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from twinsim.bench.runner import RunnerError, RunnerSettings, run_cases

pytestmark = pytest.mark.slow  # Ray starts its own processes: a few seconds each run


def _setup(ctx: dict) -> dict:
    return {"base": ctx["base"], "log": Path(ctx["log"])}


def _case(state: dict, spec: dict) -> dict:
    """Squares, with a trail of what ran; a case may kill its own process once, or always raise."""
    (state["log"] / f"ran-{spec['x']}-{time.monotonic_ns()}").touch()
    marker = spec.get("die_once")
    if marker and not Path(marker).exists():
        Path(marker).touch()
        os._exit(9)  # a worker killed mid-case (out of memory, a node lost)
    if spec.get("raise"):
        raise ValueError(f"case {spec['x']} cannot be done")
    return {"value": state["base"] + spec["x"] ** 2}


@pytest.fixture(autouse=True)
def _by_value():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import the tests folder
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _ran(log: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in log.iterdir())


def test_a_killed_worker_is_retried_once_and_a_case_failing_twice_is_recorded(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    specs = [{"x": i} for i in range(4)] + [{"x": 4, "die_once": str(tmp_path / "died")}, {"x": 5, "raise": True}]
    run = run_cases("toy", _case, _setup, {"base": 1, "log": str(log)}, specs,
                    RunnerSettings(workers=2, records=tmp_path / "records", progress=False))
    assert run.backend == "ray"
    assert [r.record for r in run.results[:5]] == [{"value": 1 + x * x} for x in range(5)]  # in case order, complete
    assert run.results[5].failed and "case 5 cannot be done" in run.results[5].error and run.results[5].attempts == 2
    assert _ran(log).count(4) == 2 and _ran(log).count(5) == 2  # the killed case once more, the failing one twice
    assert len(list((tmp_path / "records").glob("case-*.json"))) == 5  # a failed case leaves no record: it runs again
    serial = run_cases("toy", _case, _setup, {"base": 1, "log": str(log)}, specs[:4], RunnerSettings(progress=False))
    assert serial.backend == "serial" and serial.records == run.records[:4]


_INTERRUPTED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import test_runner as t
    from pathlib import Path
    from twinsim.bench.runner import RunnerSettings, run_cases
    specs = [{{"x": i}} for i in range(6)]
    specs[3]["die_once"] = {marker!r}  # the whole run killed at the fourth case
    run_cases("toy", t._case, t._setup, {{"base": 1, "log": {log!r}}}, specs,
              RunnerSettings(records=Path({records!r}), progress=False))
""")


def test_resume_after_an_interrupted_run_finishes_only_the_missing_cases(tmp_path):
    log, records = tmp_path / "log", tmp_path / "records"
    log.mkdir()
    script = _INTERRUPTED.format(tests=str(Path(__file__).parent), marker=str(tmp_path / "died"), log=str(log),
                                 records=str(records))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr[-2000:]
    assert _ran(log) == [0, 1, 2, 3] and len(list(records.glob("case-*.json"))) == 3
    for p in log.iterdir():
        p.unlink()
    specs = [{"x": i} for i in range(6)]
    specs[3]["die_once"] = str(tmp_path / "died")  # the same inputs: the same content keys
    run = run_cases("toy", _case, _setup, {"base": 1, "log": str(log)}, specs,
                    RunnerSettings(records=records, resume=True, progress=False))
    assert _ran(log) == [3, 4, 5]  # only the missing ones ran
    assert [r.resumed for r in run.results] == [True] * 3 + [False] * 3
    assert run.records == [{"value": 1 + x * x} for x in range(6)]
    changed = run_cases("toy", _case, _setup, {"base": 2, "log": str(log)}, specs,
                        RunnerSettings(records=records, resume=True, progress=False))
    assert not any(r.resumed for r in changed.results) and changed.records[0] == {"value": 2}  # other inputs: run again
    json.loads(next(records.glob("case-0000-*.json")).read_text())["record"]  # each record is whole JSON


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("listening", [False, True], ids=["nothing-there", "not-a-ray-head"])
def test_an_unreachable_cluster_is_one_line_and_exit_2_within_30_s(listening):
    port = _free_port()
    if listening:  # something answers on the port, but it is not a Ray head
        srv = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=lambda: [srv.accept()[0].close() for _ in range(100)], daemon=True).start()
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "bench", "plan", "--levels", "L1", "--pairs", "1",
                          "--address", f"127.0.0.1:{port}", "-o", os.devnull], capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - t
    assert out.returncode == 2 and wall < 30, (wall, out.stderr[-2000:])
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("twinsim: error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "Traceback" not in out.stderr


def test_bad_runner_settings_are_refused():
    with pytest.raises(RunnerError, match="--resume needs a records folder"):
        RunnerSettings(resume=True)
    with pytest.raises(RunnerError, match="HOST:PORT"):
        from twinsim.bench.runner import check_address

        check_address("nowhere")


@pytest.mark.timeout(600)
def test_bench_plan_on_two_workers_writes_the_serial_records(example, example_patient_model, tmp_path):
    """A short bench plan (AP+LAT and one random pair, a short fit at 128 px): the same per-case records to 1e-9."""
    from twinsim.bench.plan import run_plan_bench
    from twinsim.recon.fit import FitSettings

    short = FitSettings(iterations=(5, 3, 2), restarts=0)
    runs = {}
    for name, rs in (("serial", RunnerSettings(progress=False, records=tmp_path / "serial")),
                     ("ray", RunnerSettings(workers=2, progress=False, records=tmp_path / "ray"))):
        runs[name] = run_plan_bench(example.ct, example.labels, example.label_table, ["L1"], n_random=1, size_px=128,
                                    fit_settings=short, runner=rs, progress=False)
    assert runs["ray"]["runner"][0]["backend"] == "ray" and runs["serial"]["runner"][0]["backend"] == "serial"

    def same(a, b, path=""):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), path
            for k in a:
                if k not in ("seconds", "seconds_median"):  # wall times differ, everything else must not
                    same(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), path
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{path}[{i}]")
        elif isinstance(a, float):
            assert abs(a - b) <= 1e-9, (path, a, b)
        else:
            assert a == b, (path, a, b)

    same(runs["serial"]["levels"], runs["ray"]["levels"])
    ours = runs["serial"]["levels"]["L1"]["random"]["ours"]["cases"][0]
    assert ours["paths"], ours  # the fit ran and produced paths: the comparison is not between two empty records


@pytest.mark.timeout(300)
def test_bench_recon_through_the_runner_writes_records_and_resumes_them(example, example_patient_model, tmp_path):
    """bench recon's cases go through the runner: records, the case files, and a resumed run that fits nothing again."""
    from twinsim.bench.recon import run_recon_bench
    from twinsim.recon.fit import FitSettings

    short = FitSettings(iterations=(10, 5, 3), restarts=0)
    kw = dict(n_random=0, size_px=192, settings=short, progress=False, reference_model=None, case_dir=tmp_path / "cases")
    first = run_recon_bench(example.ct, example.labels, example.label_table, ["L1"],
                            runner=RunnerSettings(progress=False, records=tmp_path / "rec"), **kw)
    assert first["runner"][0]["ran"] == 1 and len(list((tmp_path / "rec").glob("case-*.json"))) == 1
    ours = first["levels"]["L1"]["ap_lat"]["ours"]["cases"][0]
    assert ours["dice"] > 0.5, ours  # a generous floor: the short fit reconstructed the vertebra
    assert (tmp_path / "cases" / "L1" / "clicks.json").is_file()  # AP+LAT saved as input for `twinsim reconstruct`
    again = run_recon_bench(example.ct, example.labels, example.label_table, ["L1"],
                            runner=RunnerSettings(progress=False, records=tmp_path / "rec", resume=True), **kw)
    assert again["runner"][0]["ran"] == 0 and again["runner"][0]["resumed"] == 1
    assert again["levels"]["L1"]["ap_lat"] == first["levels"]["L1"]["ap_lat"]
