"""The suite's warm fit server (tests/warm_fits.py) runs a command as a cold process would."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_lightclf


def _served(args: str) -> int:
    log = Path(os.environ["LIGHTCLF_WARM_FITS"]).with_name("server.log").read_text()
    return log.count(f": lightclf {args}\n")


def test_a_warm_command_ends_as_the_cold_one(tmp_path):
    cases = [
        ("study", "--config", str(tmp_path / "missing.yaml")),  # a one-line error, exit 2
        ("nosuchcommand",),
    ]
    for args in cases:
        before = _served(" ".join(args))
        warm = run_lightclf(*args)
        assert _served(" ".join(args)) == before + 1  # it was served warm
        cold = run_lightclf(*args, env={"LIGHTCLF_WARM_FITS": ""})
        assert _served(" ".join(args)) == before + 1  # and this one was not
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
        assert warm.returncode == 2 and warm.stderr.startswith("lightclf: error:"), warm.stderr


def test_start_up_settings_a_fork_cannot_honour_start_cold():
    before = _served("nosuchcommand")
    result = run_lightclf("nosuchcommand", env={"PYTHONHASHSEED": "7"})
    assert result.returncode == 2 and _served("nosuchcommand") == before
