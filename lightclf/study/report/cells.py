"""Table cells the question report's sections share (torch-free)."""

from __future__ import annotations

import statistics

__all__ = ["mean_std"]


def mean_std(values: list[float | None], scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
    """``mean ± std`` of the values present, scaled (one value alone, ``-`` for none); ``signed``
    puts a sign on the mean, for gains and effects."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    sign = "+" if signed else ""
    if len(present) == 1:
        return f"{scale * present[0]:{sign}.{digits}f}"
    return f"{scale * statistics.fmean(present):{sign}.{digits}f} ± {scale * statistics.stdev(present):.{digits}f}"
