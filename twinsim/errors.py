"""The one base class of the errors a user can cause or fix: bad input, a bad configuration, a device
that refuses or is not there.

The command line prints such an error in one line and exits 2; anything else is a bug and keeps its
traceback. Each module's own error class derives from this and from the built-in it always was
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so ``except ValueError`` still catches it.
"""

from __future__ import annotations


class TwinsimError(Exception):
    """Bad input or configuration, or a device's refusal; its message names the file, key or device."""


class UsageError(TwinsimError, ValueError):
    """A command's options do not fit together or are out of range."""
