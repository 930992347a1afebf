"""Python imports this at the start of every process whose path holds tests/ (the fits tests start,
and the fits a study runner under test starts): a `python -m lightclf ...` runs as a warm fork of a
server that has imported torch and Lightning already (tests/warm_fits.py), when the suite runs one."""

import os
import sys

if os.environ.get("LIGHTCLF_WARM_FITS") and sys.orig_argv[1:3] == ["-m", "lightclf"]:
    from warm_fits import attach

    attach(sys.orig_argv[3:])
