"""Shared fixtures: offline W&B, a tiny real data set (scikit-learn digits), CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

# One thread per test process, set before torch loads (subprocess fits inherit it): the suite runs
# two test processes at once (pytest-xdist), and tiny fits gain nothing from a second thread but
# OpenMP's spin-waiting. Tests that need a thread count set their own (study --threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A study or tune runner gives each fit its share of the cores (2 here, with one job), which the
# other test process is using: the fits of the timm-knob study spent 7-34 s of CPU each with two
# threads and 4.5 s with one. The runners under test are told the same one thread.
ONE_THREAD = ("--threads", "1")
# Bytecode, written once: where the environment forbids it (PYTHONDONTWRITEBYTECODE=1, as this
# project's CI image sets), every cold process the suite starts (CLI commands, DDP ranks, a study's
# fits) compiled torch, Lightning and wandb from source again: 26 s of CPU per process against 9.5 s
# from bytecode (the CI's AMD EPYC). Python skips the write where site-packages is read-only.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

pytest_plugins = ("scheduling",)  # the order the two test workers take the tests in (tests/scheduling.py)

REPO = Path(__file__).resolve().parents[1]
PYTHONPATH = f"{REPO}{os.pathsep}{REPO / 'tests'}"  # subprocess fits can load test helpers (kill_points)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Lightning binds its log handler to sys.stderr when first imported. Imported here, before any
    test (and after OMP_NUM_THREADS, since it loads torch), that is the session's stream; imported
    first inside a test's capfd (run_here), it would be that test's capture file, closed afterwards,
    and every later in-process fit would print a logging traceback into the one-line error a test
    checks. Not in pytest-xdist's controller, which runs no test: importing Lightning there (8 s of
    CPU) delayed the start of every worker."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import lightning.pytorch  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def warm_fits():
    """One warm fit server per test process (tests/warm_fits.py): the `python -m lightclf` processes
    the tests start, directly or through a study runner, fork from it instead of importing torch and
    Lightning afresh. LIGHTCLF_WARM_FITS= (empty) runs every one cold."""
    import tempfile

    from warm_fits import ADDRESS, PYTHON, STARTUP, startup_values

    if ADDRESS in os.environ and not os.environ[ADDRESS]:
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="lightclf-warm-"))  # short: a socket path has ~100 bytes
    address = str(folder / "socket")
    # As lightclf's main sets it (the runner's fits inherit it): the same start-up values everywhere.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # One thread in the server whatever the caller exported: a fork copies only the forking thread.
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "warm_fits.py"), address], env=env, stdout=log, stderr=log
        )
    deadline = time.time() + 60
    while not os.path.exists(address) and server.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # clients may connect once the socket exists: they queue while it imports
    os.environ.update({ADDRESS: address, PYTHON: sys.executable, STARTUP: startup_values(env)})
    yield
    server.terminate()
    server.wait(30)
    log = (folder / "server.log").read_text()
    if os.environ.get("LIGHTCLF_WARM_FITS_LOG"):  # a folder: keep the log (per-fit CPU by test)
        keep = Path(os.environ["LIGHTCLF_WARM_FITS_LOG"])
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"server-{os.getpid()}.log").write_text(log)
    shutil.rmtree(folder, ignore_errors=True)
    assert "Traceback" not in log, f"the warm fit server failed:\n{log[-3000:]}"


@pytest.fixture(autouse=True)
def isolated_environment():
    """Undo what an in-process fit leaves behind: lightclf sets WANDB_MODE, and wandb exports
    WANDB_SERVICE, which would make later subprocess fits share this process's W&B service."""
    saved = dict(os.environ)
    yield
    if "WANDB_SERVICE" in os.environ and "WANDB_SERVICE" not in saved and "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    os.environ.clear()
    os.environ.update(saved)


# RunRecorder and LastCheckpoint (the run folder's writers) are not listed: the CLI adds them.
SMOKE_CALLBACKS = [
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/acc1", "mode": "max"}},
    {"class_path": "lightclf.training.throughput.TrainThroughput", "init_args": {"window_size": 4}},
    # The end-of-test field probe on 8 images, not 256: every smoke fit runs it (14 probes with the
    # per-block ones; 2.5 of a fit's 17 profiled seconds at 32 images), and
    # tests/test_receptive_field.py checks its numbers, not these fits.
    {"class_path": "lightclf.training.evaluation.ReceptiveFieldProbe", "init_args": {"images": 8}},
]


def smoke_config(tmp_path: Path, network: str = "ddsnet", network_kwargs: dict | None = None, **overrides) -> Path:
    """A real fit config on digits at 32 px: a few dozen steps on 2 CPU cores."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "limit_train_batches": 12,
            "limit_val_batches": 2,  # 64 images: the figures' plumbing, not their precision
            "limit_test_batches": 2,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {"project": "smoke", "save_dir": str(tmp_path / "runs"), "tags": ["test"]},
            },
            "callbacks": SMOKE_CALLBACKS,
        },
        "model": {
            "network": network,
            "network_kwargs": network_kwargs
            if network_kwargs is not None
            else {"width_multiplier": 0.25, "small_input": True},
        },
        "data": {
            "class_path": "lightclf.data.Digits",
            "init_args": {"resolution": 32, "channels": 3, "batch_size": 32},
        },
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_lightclf(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": PYTHONPATH, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lightclf", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finished_test_metrics(study) -> dict[str, dict]:
    """Each run of a study: its test metrics, checked finished (by run id)."""
    out = {}
    for spec in study.specs():
        record = json.loads((study.run_dir(spec) / "results.json").read_text())
        assert record["status"] == "finished"
        out[spec.run_id] = record["test_metrics"]
    return out


@dataclass
class InProcessResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_here(capfd, monkeypatch):
    """``python -m lightclf ARGS`` in this process: for error paths, where a subprocess would spend
    ~5 s importing torch and Lightning to print one line (tests/test_fuzz.py runs one case of each
    command family as its own process too). An exception other than SystemExit fails the test."""
    from lightclf.cli import main

    monkeypatch.chdir(REPO)

    def run(*args: str) -> InProcessResult:
        capfd.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        captured = capfd.readouterr()
        return InProcessResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def tmp_config(tmp_path):
    def make(**kwargs) -> Path:
        return smoke_config(tmp_path, **kwargs)

    return make


def _train_checkpoint(folder: Path) -> None:
    """One short real fit (ddsnet, digits, 4 epochs) into ``folder``: one-cycle Adam reaches 95% test
    top-1 at seed 0 (88-94% at seeds 1-2), where 6 epochs at a constant 0.003 cost 1.5x the CPU."""
    config = smoke_config(
        folder,
        **{
            "trainer.max_epochs": 4,
            "trainer.limit_train_batches": 1.0,
            "trainer.limit_val_batches": 4,  # the best checkpoint chosen on 128 images, as measured
            "model.optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
            "model.lr_schedule": {
                "class_path": "lightclf.training.schedules.OneCycle",
                "init_args": {"pct_start": 0.3},
            },
        },
    )
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A trained run's best checkpoint, which several test files reuse. Trained once per test session
    (pytest-xdist's documented pattern: the first worker trains under a file lock in the session's
    shared temp folder, the others wait and reuse it), then copied per worker, so that a test
    writing beside it (export records) never races a test checking that it is untouched (fuzz)."""
    mine = tmp_path_factory.mktemp("trained")
    if "PYTEST_XDIST_WORKER" not in os.environ:  # no xdist: this process is the session
        _train_checkpoint(mine)
    else:
        shared = tmp_path_factory.getbasetemp().parent / "trained-checkpoint"
        with FileLock(f"{shared}.lock"):
            if not shared.exists():  # trained aside and renamed: a failed fit leaves nothing to reuse
                partial = shared.with_name(f"{shared.name}.{os.environ['PYTEST_XDIST_WORKER']}")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()
                _train_checkpoint(partial)
                partial.rename(shared)
        shutil.copytree(shared / "runs" / "smoke", mine / "runs" / "smoke")
    (folder,) = (mine / "runs" / "smoke").iterdir()
    best = Path(json.loads((folder / "results.json").read_text())["best_ckpt"])
    return folder / best.relative_to(best.parent.parent)  # this copy's file, wherever it was trained
