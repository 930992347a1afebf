"""The one place lightclf decides what differs on an accelerator, as plain functions of what they
depend on (the device type, the process count, the environment), so CPU tests force every GPU and
multi-process branch by passing the values a GPU box or a DDP job would have. No torch here.

- :func:`is_accelerator`: work is queued asynchronously (CUDA, XPU, MPS...): a host read of a device
  value waits for the queue.
- :func:`host_read_every`: how often a per-step device flag (the finite-loss check) may be read on the
  host: every step only where that costs nothing (one CPU process); else once a window, and under
  several processes the read is a collective all ranks make at the same step.
- :func:`visible_gpus_for_children`: which GPU ids to hand child processes, respecting a parent's
  ``CUDA_VISIBLE_DEVICES`` (a SLURM allocation of GPUs 2,3 stays 2,3).
- :func:`loader_workers`: data-loading workers of one fit when several fits or ranks share the cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lightclf.errors import ConfigError

__all__ = [
    "CONCURRENT_FITS_ENV",
    "is_accelerator",
    "host_read_every",
    "visible_gpus_for_children",
    "loader_workers",
    "HOST_READ_WINDOW",
]

# Set by the study runner for each fit it starts: how many fits share this machine at once, so each
# fit's data loaders take their share of the cores instead of all of them.
CONCURRENT_FITS_ENV = "LIGHTCLF_CONCURRENT_FITS"

# Steps between host reads of a device flag where a read costs a queue drain (or a collective).
HOST_READ_WINDOW = 25


def is_accelerator(device_type: str) -> bool:
    """True for every device whose work is queued asynchronously (anything but the CPU)."""
    return device_type != "cpu"


def host_read_every(device_type: str, world_size: int = 1) -> int:
    """Steps between host reads of a per-step device flag: 1 for one CPU process (free), else
    ``HOST_READ_WINDOW`` (an accelerator's queue drain, or a collective every rank must join)."""
    return 1 if not is_accelerator(device_type) and world_size <= 1 else HOST_READ_WINDOW


def visible_gpus_for_children(
    requested: str | None, device_count: int, environ: Mapping[str, str] | None = None
) -> list[str] | None:
    """The GPU ids to export as each child's ``CUDA_VISIBLE_DEVICES``: ``requested`` (indices as this
    process sees them, e.g. ``0,1``), else every GPU this process sees; mapped through this process's
    own ``CUDA_VISIBLE_DEVICES`` when it has one, since a child's list names devices as the system
    does. None: no GPU (or ``cpu`` requested)."""
    environ = os.environ if environ is None else environ
    if requested == "cpu":
        return None
    if requested is None:
        wanted = [str(i) for i in range(device_count)]
    else:
        wanted = [d.strip() for d in requested.split(",") if d.strip()]
        if not wanted or not all(d.isdigit() for d in wanted):
            raise ConfigError(f"--devices: expected GPU indices like 0,1 or 'cpu', got {requested!r}")
        missing = [d for d in wanted if int(d) >= device_count]
        if missing:
            raise ConfigError(f"--devices: GPU {', '.join(missing)} not visible ({device_count} GPU(s) here)")
    ours = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    mapped = [ours[int(d)] if ours and int(d) < len(ours) else d for d in wanted]
    return mapped or None


def loader_workers(requested: int | None, cores: int, fits: int = 1, ranks: int = 1) -> int:
    """Decoding workers for one rank of one fit: ``requested`` if given, else this rank's share of the
    cores (the cores split between the fits running at once and the ranks of each), less the one the
    training loop itself uses, at most 8; 0 (decode in the training process) when no core is left."""
    if requested is not None:
        return max(0, requested)
    share = cores // max(1, fits * ranks)
    return max(0, min(8, share - 1))
