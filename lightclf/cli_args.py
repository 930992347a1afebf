"""The argument parser of lightclf's tool commands (bench, study, report, export, predict)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["ToolArgumentParser"]


class ToolArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes end in one ``lightclf: error:`` line (exit 2), like ``lightclf fit``'s."""

    def error(self, message: str) -> NoReturn:
        print(f"lightclf: error: {message} (options: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
