"""The errors lightclf reports to its user as one ``lightclf: error:`` line (exit 2).

Kept free of torch and every other heavy import, so tools that only read YAML or JSON (``study
--dry-run``, ``report``) can raise and catch them without loading the training stack.
"""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["ConfigError", "DataError", "USER_ERRORS", "report_error", "exit_with_error"]


class ConfigError(ValueError):
    """A setting that cannot work (a network, a config key, a path, a checkpoint); the message names it."""


class DataError(RuntimeError):
    """The data set is missing, empty or malformed; the message says which path and what to do."""


# What the CLI turns into one line instead of a traceback.
USER_ERRORS = (ConfigError, DataError, FloatingPointError, FileNotFoundError)


def report_error(message: str) -> None:
    """Print the one line every lightclf user error ends in (the only place it is formatted)."""
    print(f"lightclf: error: {message}", file=sys.stderr, flush=True)


def exit_with_error(message: str, code: int = 2) -> NoReturn:
    """``report_error`` then exit (2: bad input; 1: runs that failed)."""
    report_error(message)
    sys.exit(code)
