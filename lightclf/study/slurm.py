"""`lightclf study --launcher slurm`: the study's unfinished runs as one SLURM job array, through submitit.

Each array task runs one run exactly as the local runner does (claim file, ``fit.log``, resume
from ``last.ckpt``, records archived), in a process of its own. Preemption and time-outs are
handled by **submitit's checkpointing**: the task is a ``submitit.helpers.Checkpointable``; on
SLURM's warning signal (SIGUSR2, which the fit ignores) its ``checkpoint`` stops the fit with
SIGTERM (the fit records itself as interrupted) and requeues the task with the same arguments;
the requeued task (a higher ``SLURM_RESTART_COUNT``) takes over its claim and resumes the run
from its ``last.ckpt``.
Lightning's own SLURM requeue is kept out of the way: the fit runs without the ``SLURM_*``
variables, so the runner alone decides what is requeued. Logs go to ``<save_dir>/slurm/<study>/``
(on the shared file system the study's run folders are on).

Tested with submitit's local executor (``cluster="local"``), the same code path without SLURM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightclf.errors import ConfigError
from lightclf.study.execution import (
    Claim,
    Slot,
    archive_run,
    kill_fits,
    run_one,
    run_status,
    stop_fits,
    wait_for_fits,
)
from lightclf.study.spec import RunSpec, Study, load_study

try:  # optional: only `--launcher slurm` needs it, and says so in one line when it is missing
    from submitit.helpers import Checkpointable
except ImportError:
    Checkpointable = object

__all__ = ["SlurmOptions", "StudyTask", "TunerTask", "submit_study", "submit_tuners"]


@dataclass(frozen=True)
class SlurmOptions:
    """How each array task is submitted: partition, minutes, GPUs and cores per task, parallelism."""

    partition: str | None = None
    minutes: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    parallelism: int = 8
    cluster: str | None = None  # None: SLURM when sbatch is there; "local" runs the same tasks here

    @classmethod
    def from_args(cls, args, parallelism: int) -> SlurmOptions:
        """From a tool's ``--slurm-*`` flags (``study`` and ``tune`` share them)."""
        return cls(
            partition=args.slurm_partition,
            minutes=args.slurm_time,
            gpus_per_job=args.slurm_gpus_per_job,
            cpus_per_job=args.slurm_cpus_per_job,
            parallelism=parallelism,
            cluster=None if args.slurm_cluster == "auto" else args.slurm_cluster,
        )

    def executor(self, folder: Path, name: str):
        """A submitit executor for one job array of these tasks, logging into ``folder``."""
        executor = _submitit().AutoExecutor(folder=str(folder), cluster=self.cluster)
        executor.update_parameters(
            name=name,
            timeout_min=self.minutes,
            gpus_per_node=self.gpus_per_job,
            cpus_per_task=self.cpus_per_job,
            slurm_array_parallelism=self.parallelism,
            **({"slurm_partition": self.partition} if self.partition else {}),
        )
        return executor


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("study --launcher slurm needs submitit: pip install submitit") from None
    return submitit


class _RequeuedTask(Checkpointable):
    """An array task whose fits stop cleanly on SLURM's warning signal before it is requeued."""

    def checkpoint(self, *args, **kwargs):
        """SLURM's warning signal (time-out or preemption): stop the fit (it records itself as
        interrupted), then requeue this task with the same arguments; the rerun resumes the run."""
        stop_fits()
        wait_for_fits(60)
        kill_fits()
        return super().checkpoint(*args, **kwargs)


class StudyTask(_RequeuedTask):
    """One array task: run ``run_id`` of the study at ``study_path``. On preemption or time-out
    submitit calls ``checkpoint`` (Checkpointable's: requeue with the same arguments), and the rerun
    resumes from the run's last checkpoint."""

    def __call__(self, study_path: str, run_id: str, extra: list[str]) -> str:
        study = load_study(study_path)
        (spec,) = [s for s in study.with_picks(study.specs())[0] if s.run_id == run_id]
        if run_status(study, spec) == "finished":
            return "skipped"
        claim = Claim(study.run_dir(spec) / "claim.json")
        holder = claim.acquire()
        if holder is not None:
            return f"held by pid {holder.get('pid')} on {holder.get('host')}"
        try:
            slot = Slot(device=None, threads=None)  # the allocation's GPUs and cores, as SLURM gave them
            result = run_one(study, spec, study.run_dir(spec), slot, extra, print, f"[{run_id}]", echo=True)
            archive_run(study, spec)
            return result
        finally:
            claim.release()


def submit_study(
    study: Study,
    study_path: str,
    specs: list[RunSpec],
    options: SlurmOptions,
    extra: list[str],
    dry_run: bool = False,
    wait: bool = False,
    log=print,
) -> dict[str, str]:
    """Submit the runs of ``specs`` not yet finished as one job array; with ``wait``, wait for it."""
    _submitit()  # one line now if it is missing
    todo = [spec for spec in specs if run_status(study, spec) != "finished"]
    log(f"study {study.name}: {len(specs) - len(todo)} finished, {len(todo)} to submit")
    if not todo or dry_run:
        return {spec.run_id: "dry-run" for spec in todo}
    folder = Path(study.save_dir) / "slurm" / study.name
    executor = options.executor(folder, f"lightclf-{study.name}")
    jobs = executor.map_array(
        StudyTask(), [study_path] * len(todo), [spec.run_id for spec in todo], [extra] * len(todo)
    )
    log(f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs); logs in {folder}")
    if not wait:
        log(f"watch: squeue -u $USER; when done: lightclf report --study {study_path}")
        return {spec.run_id: "submitted" for spec in todo}
    outcome = {}
    for spec, job in zip(todo, jobs):
        try:
            outcome[spec.run_id] = job.result()
        except Exception as err:  # a task that failed in its job: say which and where its log is
            outcome[spec.run_id] = f"failed ({type(err).__name__}; log: {job.paths.stderr})"
        log(f"{spec.name}: {outcome[spec.run_id]}")
    return outcome


class TunerTask(_RequeuedTask):
    """One array task of ``lightclf tune --launcher slurm``: a tuner (one trial at a time, its seeds on
    the allocation) sharing the study's journal with the other tasks. On preemption its running trial
    is stopped and re-queued; the requeued task (or any other) resumes its fits."""

    def __call__(self, study_path: str, extra: list[str]) -> str:
        from lightclf.study.tuning.tuner import Tuner

        study = load_study(study_path)
        slots = [Slot(device=None, threads=None) for _ in study.tuning.seeds]
        outcomes = Tuner(study, slots, extra).run()
        return f"{len(outcomes)} trial(s)"


def submit_tuners(study: Study, study_path: str, workers: int, options: SlurmOptions, extra: list[str], log=print):
    """Submit ``workers`` tuner tasks as one job array; they share the journal (one storage, no trial
    twice, ``n_trials`` per arm in all)."""
    folder = Path(study.save_dir) / "slurm" / f"{study.name}-tune"
    executor = options.executor(folder, f"lightclf-tune-{study.name}")
    jobs = executor.map_array(TunerTask(), [study_path] * workers, [extra] * workers)
    log(f"submitted {len(jobs)} tuner task(s) as job array {jobs[0].job_id.split('_')[0]}; logs in {folder}")
    return jobs
