"""Keep freed host memory in the process: glibc's malloc otherwise maps every large tensor afresh.

glibc serves allocations above its mmap threshold (128 KiB, rising only as such blocks are freed)
with fresh ``mmap`` pages and returns them on ``free``; the next step's tensor of the same size
faults in and zeroes every 4 KiB page again. A CPU training step allocates and frees tens of
megabytes of activations and gradients, so it pays that each step: DDSNet width 0.25 at 28 px,
batch 128, spent more time in page faults than in arithmetic on its 32-channel 28x28 maps (BN
backward and ReLU backward ~20 ms per call against ~0.5 ms for the 16-channel ones). Raising the
mmap and trim thresholds keeps those pages in the heap: measured 1.5x training img/s with 2 threads
and 1.45x with 1 (reports/bench/README.md, "Host allocator"). The same effect as running under
jemalloc or tcmalloc, as PyTorch's CPU performance guide suggests, without a preloaded library.

Process-wide and one-way (glibc has no getter), so the CLI calls it once at start; a script that
uses lightclf as a library may call it too. ``LIGHTCLF_HOST_ALLOCATOR=default`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["tune_host_allocator"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
# Larger than any activation a CPU fit allocates. Older glibc caps the mmap threshold at
# 32 MiB (HEAP_MAX_SIZE / 2) and refuses more: then the cap, which still covers small nets.
_THRESHOLDS = (1 << 30, 32 << 20)
_INT_MAX = (1 << 31) - 1


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a glibc system (or no confstr: Windows)
        return False


def tune_host_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they were set (False off
    glibc, e.g. on macOS or musl, or when ``LIGHTCLF_HOST_ALLOCATOR=default``)."""
    if os.environ.get("LIGHTCLF_HOST_ALLOCATOR", "").lower() == "default":
        return False
    if not _glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]  # int mallopt(int param, int value)
    libc.mallopt.restype = ctypes.c_int
    for threshold in _THRESHOLDS:
        if libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            # Trim only above twice the largest block kept: freed activations stay for the next step.
            return libc.mallopt(_M_TRIM_THRESHOLD, min(2 * threshold, _INT_MAX)) == 1
    return False
