"""Small helpers for what commands print and write: tables, files written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(out)


def read_json(path: str | Path, error: type[Exception], what: str) -> Any:
    """A JSON file's contents; a missing or unreadable file raises ``error`` naming ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from exc


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str, expected: str) -> dict:
    """A YAML file holding a mapping; otherwise ``error`` naming ``what`` it should be and the ``expected`` layout."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} is a mapping ({expected})")
    return data


def validation_problems(exc: Any, skip: int = 0, most: int = 4) -> str:
    """A pydantic ValidationError as one line: each problem with its dotted key, the first ``most`` of them.

    ``skip`` drops leading location parts that are not keys of the file (a wrapper model's field).
    """
    def shown(x: object) -> bool:  # pydantic adds union branches and validators to the location
        return not (isinstance(x, str) and (x.startswith(("function-", "literal[", "list[")) or x[:1].isupper()))

    out = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"][skip:] if shown(x))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            out.append(f"missing key '{where}'")
        elif e["type"] == "extra_forbidden":
            out.append(f"unknown key '{where}' (misspelt?)")
        elif e["type"] in ("value_error", "assertion_error"):
            out.append(f"'{where}' {msg}" if where else msg)
        else:
            out.append(f"'{where}': {msg}, got {e.get('input')!r}")
    out = list(dict.fromkeys(out))
    # A misspelt section name can fail many keys below it: the first few say enough.
    return "; ".join(out[:most]) + (f" (and {len(out) - most} more)" if len(out) > most else "")


def num(x: float | None, spec: str) -> str:
    """A number for a table, or '-' where there is none."""
    return "-" if x is None else format(x, spec)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on failure delete it.

    A crash or an exception never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename, on failure it is deleted.

    A cache entry or an installed data set is either whole under its final name or not there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG, atomically, and close it (batch runs make many)."""
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)
