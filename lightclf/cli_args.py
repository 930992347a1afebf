"""The argument parser of lightclf's tool commands (bench, study, report, export, predict)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from lightclf.errors import exit_with_error

__all__ = ["ToolArgumentParser"]


class ToolArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes end in one ``lightclf: error:`` line (exit 2), like ``lightclf fit``'s."""

    def error(self, message: str) -> NoReturn:
        exit_with_error(f"{message} (options: {self.prog} --help)")
