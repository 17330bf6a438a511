"""The README's limits and commands, and the documentation site built strictly."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_points_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200 and len(text) <= 12_000
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):  # every relative link resolves
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_command_the_readme_names_exists():
    from twinsim.cli import build_parser

    text = (ROOT / "README.md").read_text()
    parser = build_parser()
    commands = set(re.findall(r"`twinsim ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", text))
    assert len(commands) >= 12
    for words in commands:
        argv = words.split()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
        assert argv[0] in sub, words
        inner = [a for a in sub[argv[0]]._actions if a.__class__.__name__ == "_SubParsersAction"]
        if len(argv) > 1 and inner:
            assert argv[1] in inner[0].choices or argv[1] in ("all",), words


@pytest.mark.timeout(300)
def test_the_documentation_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=280, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    # The CLI reference is generated from the parser: every bench's own options are on the page.
    for text in ("twinsim bench rehearse", "--clicks-mm", "twinsim ssm build", "twinsim calibrate carm"):
        assert text in cli, text
    assert "cli-reference" not in cli  # the marker was replaced
    formats = (tmp_path / "site" / "reference" / "file-formats" / "index.html").read_text()
    assert "top_size_m" in formats and "--8&lt;--" not in formats  # the scene file itself is included
