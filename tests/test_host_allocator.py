"""The host allocator setting: large tensors reuse heap pages instead of faulting in fresh ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PYTHONPATH

# One process (the setting is process-wide and one-way): page faults of allocating and filling a
# 40 MiB tensor 20 times (above glibc's largest dynamic mmap
# threshold, 32 MiB: mapped afresh each time by default, whatever came before), before and after tune_host_allocator().
PROBE = """
import resource, torch
from lightclf.host_allocator import tune_host_allocator

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(10 << 20)  # 40 MiB of float32, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
tuned = tune_host_allocator()
faults()  # the first block after tuning still comes from the OS
print(before, tuned, faults())
"""


def _probe(**env: str) -> tuple[int, bool, int]:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env})  # fmt: skip
    before, tuned, after = result.stdout.split()
    return int(before), tuned == "True", int(after)


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"), reason="glibc only")
def test_tuned_allocator_stops_refaulting_large_tensors():
    before, tuned, after = _probe()
    assert tuned
    # 20 x 10,240 pages faulted in afresh by default; once tuned, the heap keeps the first block.
    assert before > 20 * 10240 * 0.9
    assert after < 10240


def test_allocator_left_alone_when_asked(monkeypatch):
    from lightclf.host_allocator import tune_host_allocator

    monkeypatch.setenv("LIGHTCLF_HOST_ALLOCATOR", "default")
    assert tune_host_allocator() is False  # returns before any mallopt call: safe in this process


def test_cli_tunes_the_allocator_before_any_command(monkeypatch):
    import lightclf.cli as cli

    calls = []
    monkeypatch.setattr(cli, "tune_host_allocator", lambda: calls.append("tuned"))
    monkeypatch.setitem(cli.COMMANDS, "probe", lambda argv: calls.append(("ran", argv)))
    cli.main(["probe", "x"])
    assert calls == ["tuned", ("ran", ["x"])]
