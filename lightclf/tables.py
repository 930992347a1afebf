"""The one CSV writer of lightclf's reports and benchmarks (torch-free)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_csv"]


def write_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str] | None = None, append: bool = False
) -> Path:
    """Write ``rows`` under a header of ``fields`` (default: every row's keys, in order of first
    appearance; keys outside ``fields`` are left out, missing ones are empty cells). Lists become
    space-separated cells. ``append`` adds to an existing file without a second header. An empty
    table without ``fields`` is an empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if fields is None:
        fields = list(dict.fromkeys(key for row in rows for key in row))
    new = not (append and path.exists() and path.stat().st_size)
    with path.open("a" if append else "w", newline="") as fh:
        if not fields:
            return path
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()})
    return path
