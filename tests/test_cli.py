"""One CLI design: real sub-commands with only their own options, one list syntax, exit codes 0/1/2."""

import argparse
import subprocess
import sys

import pytest

from twinsim.cli import _with_defaults, build_parser, main


def _walk(parser, words=("twinsim",)):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*words, name))


def _options(parser):
    return {s for a in parser._actions for s in a.option_strings}


def test_each_bench_lists_only_its_own_options():
    benches = {w[-1]: p for w, p in _walk(build_parser()) if len(w) == 3 and w[1] == "bench"}
    assert set(benches) == {"scene", "xray", "mapping", "recon", "plan", "hal", "carm", "rehearse", "envs", "patients",
                            "view"}
    assert {"--replay", "--rates-hz", "--clients"} <= _options(benches["view"])
    rehearse = _options(benches["rehearse"])
    assert {"--clicks-mm", "--no-geoplan", "--scene", "--pairs"} <= rehearse
    for other in ("--episodes", "--cold-repeats", "--surroundings", "--suite", "--shots", "--scenario"):
        assert other not in rehearse, other
    assert "--episodes" in _options(benches["envs"]) and "--episodes" not in _options(benches["scene"])


def test_an_option_given_to_the_wrong_bench_or_an_unknown_command_is_an_error(capsys):
    for argv in (["bench", "scene", "--episodes", "5"], ["frobnicate"], ["bench"], ["ssm"], ["scenario"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    err = capsys.readouterr().err
    assert "unrecognized arguments: --episodes 5" in err and "invalid choice: 'frobnicate'" in err


def test_one_list_syntax_no_repeated_or_multi_value_options():
    for words, parser in _walk(build_parser()):
        for a in parser._actions:
            if not a.option_strings:
                continue
            assert not isinstance(a, argparse._AppendAction), (words, a.option_strings)
            assert a.nargs in (None, 0), (words, a.option_strings, a.nargs)  # lists are comma-separated in one value


def test_no_command_rehearses_and_calibrate_defaults_to_all():
    assert _with_defaults([]) == ["rehearse"]
    assert _with_defaults(["-o", "x"]) == ["rehearse", "-o", "x"]
    assert _with_defaults(["--help"]) == ["--help"]
    assert _with_defaults(["calibrate", "--rig", "r.yaml"]) == ["calibrate", "all", "--rig", "r.yaml"]
    assert _with_defaults(["calibrate", "carm"]) == ["calibrate", "carm"]
    assert _with_defaults(["scene"]) == ["scene"]


def test_usage_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TWINSIM_SHARED_DATA", raising=False)
    assert main(["ssm", "build", "-o", str(tmp_path / "m")]) == 2
    assert main(["ssm", "show", "--models", "L9", "-o", str(tmp_path / "s")]) == 2
    assert main(["bench", "rehearse", "--clicks-mm", "1,x", "-o", str(tmp_path / "b.json")]) == 2
    assert main(["bench", "plan", "--reuse-cases", "-o", str(tmp_path / "p.json")]) == 2
    assert main(["bench", "carm", "--seeds", "0", "-o", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("twinsim: error: twinsim ") for line in err)
    assert "TWINSIM_SHARED_DATA" in err[0] and "unknown model(s) ['L9']" in err[1] and "comma-separated numbers" in err[2]
    assert not list(tmp_path.iterdir())  # nothing written


def test_every_user_error_class_shares_the_one_base():
    from twinsim.anatomy.ct import PatientDataError
    from twinsim.errors import TwinsimError
    from twinsim.hal.errors import ConnectionLost, RigFileError
    from twinsim.planning.plan_file import PlanFileError
    from twinsim.scenario.schema import ScenarioFileError
    from twinsim.sim.scene_config import SceneConfigError

    for cls in (PatientDataError, RigFileError, ConnectionLost, PlanFileError, ScenarioFileError, SceneConfigError):
        assert issubclass(cls, TwinsimError), cls
    assert issubclass(PatientDataError, ValueError)  # still what it was


def test_help_is_fast_and_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "twinsim.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("rehearse", "scenario", "scene", "patient", "fetch-example", "xray", "ssm", "calibrate", "serve-vega",
                "reconstruct", "plan", "bench"):
        assert cmd in out.stdout
    # Building the parser imports no heavy library: --help stays fast.
    probe = ("import sys, twinsim.cli; twinsim.cli.build_parser(); "
             "print(sorted(m for m in ('torch', 'open3d', 'pybullet', 'nibabel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
