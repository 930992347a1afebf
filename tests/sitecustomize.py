"""Python imports this at the start of every process whose path holds tests/ (the fits tests start,
and the fits a study runner under test starts): a `python -m lightclf ...` runs as a warm fork of a
server that has imported torch and Lightning already (tests/warm_fits.py), when the suite runs one."""

import os
import sys

# `-m lightclf.__main__` too: Lightning starts a DDP fit's other ranks as `python -m <__main__'s
# module>`, which for `python -m lightclf` is lightclf.__main__ (each rank started cold: 10 s of CPU).
if os.environ.get("LIGHTCLF_WARM_FITS") and sys.orig_argv[1:3] in (["-m", "lightclf"], ["-m", "lightclf.__main__"]):
    from warm_fits import attach

    attach(sys.orig_argv[3:])
