"""twinsim's logging: one logger tree (``twinsim.*``) and one handler, which writes through the progress bars.

Library code logs (``logging.getLogger(__name__)``) and never prints its progress; the command line
installs :class:`ProgressHandler` once, so log lines and tqdm's bars share the terminal without
tearing each other. A command's own result (its table, the files it wrote) is its output and is printed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

ROOT = "twinsim"


class ProgressHandler(logging.Handler):
    """Writes each record on its own line above any running progress bar (``tqdm.write``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 (logging must never break the work it reports on)
            self.handleError(record)


def configure(level: int = logging.INFO) -> logging.Logger:
    """Install the one handler on the ``twinsim`` logger (idempotent): messages as they are, warnings marked."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if isinstance(h, ProgressHandler):
            logger.removeHandler(h)
    handler = ProgressHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


@contextlib.contextmanager
def quiet(name: str = ROOT, level: int = logging.WARNING) -> Iterator[None]:
    """Raise ``name``'s level for a while (a bench's many cases: their steps are not news)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
