"""How one run of a study is executed: its claim, its slot (GPU or CPU threads), its process and log.

Shared by the local runner (``lightclf study``, one or many jobs at once) and the SLURM launcher
(``lightclf study --launcher slurm``, one array task per run).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightclf.devices import CONCURRENT_FITS_ENV, visible_gpus_for_children
from lightclf.errors import ConfigError
from lightclf.runs import RunRecord, run_path
from lightclf.study.spec import RunSpec, Study

__all__ = [
    "Claim",
    "forget_fit",
    "holder_is_gone",
    "start_fit",
    "progress_note",
    "Slot",
    "archive_run",
    "cpu_cores",
    "plan_slots",
    "run_one",
    "run_status",
    "stop_fits",
    "kill_fits",
    "wait_for_fits",
    "stopping",
    "sweep_folder",
    "visible_gpus",
]


def run_status(study: Study, spec: RunSpec) -> str:
    """new / running / fit_done / finished / interrupted / failed (an archived finished run counts)."""
    return study.record(spec).status


def archive_run(study: Study, spec: RunSpec) -> None:
    """Copy a finished run's small records (never checkpoints) into the study's ``records`` folder."""
    if not study.records or not RunRecord.read(study.run_dir(spec)).finished:
        return
    target = Path(study.records) / spec.run_id
    target.mkdir(parents=True, exist_ok=True)
    for name in RunRecord.FILES:
        source = study.run_dir(spec) / name
        if source.exists():
            shutil.copyfile(source, target / name)


def holder_is_gone(holder: dict[str, Any]) -> bool:
    """True when the process a ``Claim.holder()`` names is known dead: a dead process of this host, or
    an earlier try of this SLURM task (a requeue: a lower ``SLURM_RESTART_COUNT``). A process on another
    machine counts as alive: its liveness cannot be checked from here."""
    me = Claim.holder()
    if holder.get("slurm_task") and holder.get("slurm_task") == me["slurm_task"]:
        if int(holder.get("slurm_restart", 0)) < me["slurm_restart"]:
            return True  # this SLURM task's earlier try, requeued (on this node or another)
    if holder.get("host") != me["host"]:
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError, TypeError):
        return False
    return False


@dataclass
class Claim:
    """A run's claim file (``<run dir>/claim.json``): created atomically by the runner that runs it, so
    any number of runners, on one machine or several sharing the folder, never run a run twice.

    A claim whose holder is a dead process of this host, or an earlier try of this SLURM task
    (a requeue: a lower ``SLURM_RESTART_COUNT``), is stale and taken over, under a lock so that of
    several runners seeing it one takes it; a live or foreign claim is respected.

    Hand-written on purpose: filelock was considered. It gives a lock held while its process lives,
    but a claim must outlive the runner's crash as a readable record (who held it, which SLURM try) and
    be taken over only when that holder is known dead; ``O_EXCL`` creation plus ``flock`` for the
    takeover step is that, in a few lines, on local and NFS folders alike."""

    path: Path

    @staticmethod
    def holder() -> dict[str, Any]:
        task = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID"))
        if task and "SLURM_ARRAY_TASK_ID" in os.environ:
            task += f"_{os.environ['SLURM_ARRAY_TASK_ID']}"
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_task": task, "slurm_restart": restart,
                "since": time.time()}  # fmt: skip

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> dict[str, Any] | None:
        """Claim the run; None when it is done. Returns the live holder's claim when another holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                with open(self.path.with_name("claim.lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # read, judge and move the stale claim as one step
                    claim = self.read()
                    if claim and not holder_is_gone(claim):
                        return claim
                    try:
                        os.rename(self.path, self.path.with_name(f"claim.stale-{os.getpid()}-{time.time_ns()}"))
                    except FileNotFoundError:
                        pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.holder(), fh)
            for old in self.path.parent.glob("claim.stale-*"):
                old.unlink(missing_ok=True)
            return None
        return self.read() or {"pid": "?", "host": "?"}

    def release(self) -> None:
        if self.read().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


@dataclass
class Slot:
    """Where one concurrent job runs: a GPU (``CUDA_VISIBLE_DEVICES``) or a share of the CPU cores."""

    device: str | None  # a GPU index as the caller sees it; None = CPU
    threads: int | None  # intra-op threads per fit (CPU); None = torch's default
    concurrent: int = 1  # fits running on this machine at once (their data loaders share the cores)

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
        # A W&B service inherited from the caller (set by any earlier wandb.init in it) would be shared
        # by every run, and it refuses a run id it still holds ("run ID ... is in use").
        if self.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.device
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        env[CONCURRENT_FITS_ENV] = str(self.concurrent)
        # The runner owns requeueing on SLURM (submitit): Lightning in the fit must not detect SLURM and
        # requeue or rename its process group on its own.
        for key in [k for k in env if k.startswith("SLURM_")]:
            env.pop(key)
        return {**env, "PYTHONUNBUFFERED": "1"}


def cpu_cores() -> int:
    """The cores this process may use (its affinity mask), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_slots(jobs: int, devices: list[str] | None, threads: int | None = None) -> list[Slot]:
    """One slot per job: GPUs round-robin (several jobs per GPU allowed), else the cores split evenly."""
    if jobs < 1:
        raise ConfigError(f"study --jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"study --threads must be >= 1, got {threads}")
    if devices:
        return [Slot(devices[i % len(devices)], threads, jobs) for i in range(jobs)]
    return [Slot(None, threads if threads is not None else max(1, cpu_cores() // jobs), jobs) for _ in range(jobs)]


def visible_gpus(requested: str | None) -> list[str] | None:
    """The GPUs to spread jobs over, as ids for the children's ``CUDA_VISIBLE_DEVICES``: ``--devices``
    (checked against what is visible), else every visible GPU, else None (CPU); a parent's own
    ``CUDA_VISIBLE_DEVICES`` (a SLURM allocation) is respected (``lightclf.devices``)."""
    if requested == "cpu":
        return None
    import torch  # only here: a dry run and the report stay free of torch

    try:
        return visible_gpus_for_children(requested, torch.cuda.device_count())
    except ConfigError as err:
        raise ConfigError(f"study {err}") from None


def progress_note(record: RunRecord) -> str:
    """How far an unfinished run got, for the line that resumes it: `` (3 of 10 epochs done, val
    top-1 90.30% after epoch 3)``, with the part of the next epoch its newest checkpoint holds when
    that was written inside one (`` (3 of 10 epochs and 412/1687 batches of epoch 4 done, ...)``);
    empty when its record says nothing yet."""
    saved = record.saved
    done = record.epoch + 1 if record.epoch is not None else 0
    # A save inside the epoch after the last recorded one (also at its end, a stop during its
    # validation), if the file it resumes from is that save's.
    partial = (
        saved is not None and saved.epoch == done and saved.batches_done > 0 and saved.describes(record.resume_ckpt)
    )
    if record.epoch is None and not partial:
        return ""
    of = f" of {record.max_epochs}" if record.max_epochs and record.max_epochs > 0 else ""
    if partial:
        total = f"/{saved.epoch_batches}" if saved.epoch_batches else ""
        where = f"{done}{of} epochs and {saved.batches_done}{total} batches of epoch {done + 1} done"
    else:
        where = f"{done}{of} epochs done"
    scored = [e for e in record.val_per_epoch if "val/acc1" in e]
    val = f", val top-1 {100 * scored[-1]['val/acc1']:.2f}% after epoch {scored[-1]['epoch'] + 1}" if scored else ""
    return f" ({where}{val})"


def resume_args(record: RunRecord) -> list[str]:
    """``--ckpt_path`` and the run's newest checkpoint (``RunRecord.resume_ckpt``), or nothing for a
    run with none."""
    newest = record.resume_ckpt
    return ["--ckpt_path", str(newest)] if newest.exists() else []


def run_one(
    study: Study, spec: RunSpec, folder: Path, slot: Slot, extra_args: list[str], log, label: str, echo: bool = False
) -> str:
    """Fit one run in its own process (resuming from its newest checkpoint, ``RunRecord.resume_ckpt``,
    if there is one); its output goes to ``<run dir>/fit.log`` (and to the console with ``echo``). Returns ok,
    interrupted or failed (exit N)."""
    args = spec.cli_args(study.base_config, study.save_dir, study.project) + list(extra_args)
    record = RunRecord.read(folder)
    resume = resume_args(record)
    if resume:
        log(f"{label} {spec.name}: resuming from {resume[1]}{progress_note(record)}")
    else:
        log(f"{label} {spec.name}: starting ({spec.run_id})")
    tuned = {"tuned": spec.tuned} if spec.tuned else {}  # the arm's pick, shown beside its factors
    RunRecord(folder=folder).write(RunRecord.STUDY, {"study": study.name, **spec.factors, **tuned})
    command = [sys.executable, "-m", "lightclf", *args]
    relay = lambda line: log(f"{label} {spec.name}: {line}")  # noqa: E731
    code = _fit(command + resume, slot, folder / "fit.log", echo, relay)
    if code not in (0, 2, *INTERRUPTED) and not stopping.is_set():
        # One retry after a pause for transient failures; config errors (2) and interrupts are final.
        # It resumes from the newest checkpoint, which the failed try may have written.
        if stopping.wait(10):
            return "interrupted"
        log(f"{label} {spec.name}: exit {code}, retrying once (log: {folder / 'fit.log'})")
        code = _fit(command + resume_args(RunRecord(folder=folder)), slot, folder / "fit.log", echo, relay)
    if code == 0:
        return "ok"
    if code in INTERRUPTED or stopping.is_set():  # stopped (Ctrl-C, SIGTERM, a time limit): resumes next time
        return "interrupted"
    return f"failed (exit {code}; log: {folder / 'fit.log'})"


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
# Set once this process stops its fits (Ctrl-C, SIGTERM, a time limit): no new run, no retry.
stopping = threading.Event()
# Exit codes of a fit that was stopped rather than failed: Ctrl-C / SIGTERM handled (130, 143), or
# killed by SIGINT / SIGTERM before its handler was installed (-2, -15).
INTERRUPTED = (130, 143, -2, -15)
# A fit's one line per epoch (lightclf.training.run_folder.epoch_line), relayed into a study's log.
EPOCH_LINE = re.compile(r"epoch \d+(/\d+)?: ")


def _fit(command: list[str], slot: Slot, log_path: Path, echo: bool, relay=None) -> int:
    """Run one fit to its end: its output into ``log_path``, and all of it to the console with
    ``echo``, else only its one-line epoch summaries through ``relay`` (several fits share the log)."""
    proc = start_fit(command, slot, log_path, pipe=True)
    if proc is None:
        return -15
    try:
        with open(log_path, "a", buffering=1) as log_file:  # line-buffered: the log is live
            for line in proc.stdout:
                log_file.write(line)
                if echo:
                    sys.stderr.write(line)
                elif relay is not None and EPOCH_LINE.match(line):
                    relay(line.rstrip())
        return proc.wait()
    finally:
        _children.discard(proc)


def start_fit(command: list[str], slot: Slot, log_path: Path, pipe: bool = False) -> subprocess.Popen | None:
    """Start one fit process on ``slot``, its output appended to ``log_path`` (or piped, for the caller
    to copy there), registered so that ``stop_fits`` reaches it; None once this runner is stopping.
    The caller waits for it and then drops it with ``forget_fit``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log_file:
        log_file.write(f"\n$ {shlex.join(command)}\n")
        log_file.flush()
        with _children_lock:  # a stop either sees this fit or keeps it from starting
            if stopping.is_set():
                return None
            proc = subprocess.Popen(
                command,
                env=slot.env(),
                stdout=subprocess.PIPE if pipe else log_file,
                stderr=subprocess.STDOUT,
                text=True,
                # SLURM's warning signal (submitit: SIGUSR2 to every process of the step) is the
                # runner's to handle; it stops the fit with SIGTERM, which the fit handles.
                preexec_fn=_ignore_sigusr2,
            )
            _children.add(proc)
    return proc


def forget_fit(proc: subprocess.Popen) -> None:
    """Drop a finished fit from the set ``stop_fits`` signals."""
    _children.discard(proc)


def sweep_folder(study: Study, spec: RunSpec) -> Path | None:
    """Under a W&B sweep agent the run id (and so the run folder) is the agent's: the study's own
    folder for the run becomes a link to it, so the runner, ``archive_run`` and ``report`` find the
    run where they look, and a retried point (a new agent id) resumes from the last checkpoint."""
    agent_id = os.environ.get("WANDB_RUN_ID") if "WANDB_SWEEP_ID" in os.environ else None
    if not agent_id:
        return None
    link = study.run_dir(spec)
    target = run_path(study.save_dir, study.project, agent_id)
    target.mkdir(parents=True, exist_ok=True)
    earlier = link.resolve() if link.exists() else None
    if earlier is not None and earlier != target.resolve():
        last = RunRecord(folder=earlier).resume_ckpt
        if last.exists():  # the earlier try's newest checkpoint, so this one resumes
            (target / "checkpoints").mkdir(exist_ok=True)
            shutil.copyfile(last, target / "checkpoints" / last.name)
        if not link.is_symlink():  # a real folder from outside the sweep: keep it beside
            link.rename(link.with_name(f"{link.name}.before-sweep-{time.time_ns()}"))
    if link.is_symlink() or not link.exists():
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.resolve(), target_is_directory=True)
        os.replace(tmp, link)  # atomic: a reader sees the old or the new target
    return target


def stop_fits() -> None:
    """SIGTERM every fit this process started (each stops at a batch's end, records itself as
    interrupted and keeps interrupted.ckpt; the next call resumes it there) and start no other."""
    import signal

    with _children_lock:
        stopping.set()
        for proc in list(_children):
            proc.send_signal(signal.SIGTERM)


def kill_fits() -> None:
    """SIGKILL the fits still running after a stop was given time (never leave an orphan training)."""
    for proc in list(_children):
        if proc.poll() is None:
            proc.kill()


def wait_for_fits(timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the fits this process started."""
    deadline = time.time() + timeout
    for proc in list(_children):
        try:
            proc.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass


def _ignore_sigusr2() -> None:
    import signal

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
