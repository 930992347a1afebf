"""`python -m lightclf study`: run a grid of fits (width x resolution x dilation + extra runs).

A study is a base fit config plus factors. Every run is a separate `lightclf fit` process
with a deterministic W&B id, group = study name and tags naming its factors, so a killed
study resumes: finished runs are skipped, interrupted ones continue from ``last.ckpt``.
``--emit-sweep`` writes the equivalent W&B sweep (one point per run, grid and extra runs alike)
so the study can fan out with `wandb agent`.

Runs execute configuration by configuration, every seed of one configuration before the next
(or seed by seed with ``order: seeds``), so a study stopped part-way leaves complete seed sets of
its first configurations (list the most important first). A run entry may carry ``overrides``
(``lightclf fit`` keys) for that run only, e.g. fewer images for an expensive baseline.

``--jobs N`` runs N fits at once, each its own process with its own slot (a GPU, round-robin,
several jobs per GPU allowed; or an equal share of the CPU cores) and its own ``fit.log``; a claim
file per run keeps any number of runners, here or on other machines sharing the folder, from
running a run twice. ``--launcher slurm`` submits the runs as a SLURM job array (submitit).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError, exit_with_error
from lightclf.runs import RunRecord
from lightclf.study.execution import (
    Claim,
    Slot,
    archive_run,
    kill_fits,
    plan_slots,
    progress_note,
    resume_args,
    run_one,
    run_status,
    stop_fits,
    stopping,
    sweep_folder,
    visible_gpus,
    wait_for_fits,
)
from lightclf.study.spec import FACTORS, RunSpec, Study, load_study

__all__ = [
    "Study", "RunSpec", "load_study", "run_status", "archive_run", "run_study", "ready_specs", "select_point", "main",
]  # fmt: skip


class Progress:
    """Counts runs done / running / left and estimates the time left from the runs timed so far (runs
    trained from their start in this call: a resumed run's time is only its rest).

    Hand-written on purpose: tqdm was considered. Its bar redraws one terminal line, but a study's
    progress goes to a log (often a file, several workers writing whole lines under a lock), and its
    ETA assumes items of one length, while a study's runs differ by configuration and run N at a time."""

    def __init__(self, total: int, jobs: int, log) -> None:
        self.total, self.jobs, self.log = total, jobs, log
        self.done = self.running = 0
        self.durations: dict[str, list[float]] = {}  # seconds of each finished run, by configuration
        self.lock = threading.Lock()

    def line(self) -> str:
        left = self.total - self.done - self.running
        eta = ""
        every = [d for ds in self.durations.values() for d in ds]
        if every:
            mean = sum(every) / len(every)
            seconds = mean * (left + self.running / 2) / max(1, self.jobs)
            eta = f", ETA {int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
        return f"study: {self.done} done, {self.running} running, {left} left{eta}"


def run_study(
    study: Study,
    extra_args: list[str] | None = None,
    dry_run: bool = False,
    log=print,
    specs: list[RunSpec] | None = None,
    jobs: int = 1,
    slots: list[Slot] | None = None,
    deadline: float | None = None,
) -> dict[str, str]:
    """Run every spec not yet finished, ``jobs`` at a time (each in its own process, on its slot), in
    order; resume interrupted ones from their last checkpoint; skip runs another runner holds.

    ``deadline`` (a ``time.time()``): no run starts that would not finish by then, judged by the
    durations of the runs of its configuration (else of all runs) trained from their start so far; at the deadline
    the running fits are stopped (SIGTERM: they record themselves as interrupted and the next call
    resumes them from their last finished epoch).
    With ``order: seeds`` a study cut this way keeps complete seed sets of its first points."""
    specs = study.specs() if specs is None else specs
    slots = slots or plan_slots(jobs, None)
    extra = list(extra_args or [])
    outcome: dict[str, str] = {}
    pending: list[tuple[int, RunSpec]] = []
    for index, spec in enumerate(specs, 1):
        if run_status(study, spec) == "finished":
            if not dry_run:
                archive_run(study, spec)  # runs finished before the study had a records folder
            log(f"[{index}/{len(specs)}] {spec.name}: finished earlier, skipped")
            outcome[spec.run_id] = "skipped"
        elif dry_run:
            args = spec.cli_args(study.base_config, study.save_dir, study.project) + extra
            record = RunRecord.read(study.run_dir(spec))
            resume = resume_args(record)
            verb = f"resuming from {resume[1]}{progress_note(record)}" if resume else f"starting ({spec.run_id})"
            log(f"[{index}/{len(specs)}] {spec.name}: {verb}")
            log("  python -m lightclf " + shlex.join(args + resume))
            outcome[spec.run_id] = "dry-run"
        else:
            pending.append((index, spec))
    if dry_run or not pending:
        return outcome
    progress = Progress(len(pending), len(slots), log)
    queue = list(reversed(pending))  # popped from the end: in order
    queue_lock = threading.Lock()
    log(progress.line() + f" ({len(slots)} at a time)")

    def fits_in_time(spec: RunSpec) -> bool:
        if deadline is None:
            return True
        with progress.lock:
            same = list(progress.durations.get(_configuration(spec), []))
            every = [d for ds in progress.durations.values() for d in ds]
        expected = max(same) if same else (max(every) if every else 0.0)
        return time.time() + expected <= deadline

    def worker(slot: Slot) -> None:
        while True:
            with queue_lock:
                if not queue or stopping.is_set():
                    return
                if not fits_in_time(queue[-1][1]):
                    log(f"time limit: {len(queue)} run(s) left for a later call (the study resumes)")
                    queue.clear()
                    return
                index, spec = queue.pop()
            try:
                take(slot, index, spec)
            except Exception as err:  # one run's I/O error (disk full, permissions) must not silence a slot
                outcome[spec.run_id] = f"failed ({type(err).__name__}: {err})"
                log(f"[{index}/{len(specs)}] {spec.name}: {outcome[spec.run_id]}")

    def take(slot: Slot, index: int, spec: RunSpec) -> None:
        label = f"[{index}/{len(specs)}]"
        folder = sweep_folder(study, spec) or study.run_dir(spec)
        claim = Claim(folder / "claim.json")
        holder = claim.acquire()
        if holder is not None:
            outcome[spec.run_id] = "held elsewhere"
            with progress.lock:
                progress.total -= 1
            log(f"{label} {spec.name}: run by pid {holder.get('pid')} on {holder.get('host')}, skipped")
            return
        with progress.lock:
            progress.running += 1
        started = time.time()
        # Only a run trained from its start here times a whole run: a resumed one's time covers what
        # was left of it, and would shrink the ETA and let a time limit start runs that cannot finish.
        from_start = not RunRecord.read(folder).resume_ckpt.exists()
        result = "failed (no result)"
        try:
            if run_status(study, spec) == "finished":  # finished by another runner since the scan
                result = "skipped"
            else:
                result = run_one(study, spec, folder, slot, extra, log, label, echo=len(slots) == 1)
                archive_run(study, spec)
        finally:
            claim.release()
            outcome[spec.run_id] = result
            with progress.lock:
                progress.running -= 1
                progress.done += 1
                if result == "ok" and from_start:
                    progress.durations.setdefault(_configuration(spec), []).append(time.time() - started)
        record = RunRecord.read(study.run_dir(spec))
        top1 = record.test_metrics.get("test/acc1")
        score = f", test top-1 {100 * top1:.2f}%" if top1 is not None else ""
        with progress.lock:
            log(f"{label} {spec.name}: {result} in {(time.time() - started) / 60:.1f} min{score}")
            log(progress.line())

    stopped: list[bool] = []
    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in slots]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
                if deadline is not None and time.time() > deadline and not stopped:
                    log("time limit reached: stopping the running fits (the next call resumes them)")
                    with queue_lock:
                        queue.clear()
                    stopped.append(True)
                    stop_fits()
                    wait_for_fits(120)
                    kill_fits()
    except BaseException:
        # Ctrl-C / SIGTERM: every fit records itself as interrupted; claims go with the threads.
        stop_fits()
        wait_for_fits(120)
        kill_fits()  # never leave an orphan fit training in a folder the next runner will take
        for thread in threads:
            thread.join(10)
        raise
    return outcome


def ready_specs(study: Study, specs: list[RunSpec], config_path: str) -> list[RunSpec]:
    """The specs that can run now, tuned arms' with their picks (which name their runs); says on
    stderr how many wait for their arm's tuning. Every runner of a study (study, gpu-study) goes
    through here, so none runs a tuned arm on the recipe's settings."""
    ready, untuned = study.with_picks(specs)
    if untuned:
        arms = len({spec.arm_key for spec in untuned})
        print(
            f"study {study.name}: {len(untuned)} run(s) of {arms} arm(s) wait for their tuning "
            f"(`lightclf tune --config {config_path}` writes {study.report_folder / 'picks.yaml'})",
            file=sys.stderr,
        )
    return ready


def sweep_config(study: Study, study_path: str) -> dict[str, Any]:
    """A W&B grid sweep with one point per run of the study (grid and extra runs, every seed):
    each agent call runs that one run through this runner (``--point run=<run id>``)."""
    return {
        "name": study.name,
        "program": "lightclf",
        "method": "grid",
        "metric": {"name": "test/acc1", "goal": "maximize"},
        "parameters": {"run": {"values": [spec.run_id for spec in study.specs()]}},
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "lightclf",
            "study",
            "--config",
            study_path,
            "--point",
            "${args_no_hyphens}",
        ],
    }


def select_point(study: Study, items: list[str]) -> list[RunSpec]:
    """The runs that ``--point`` names: ``run=<run id>`` (what a sweep agent passes) or
    factor=value pairs (every run of the study matching all of them)."""
    wanted = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in (*FACTORS, "run"):
            raise ConfigError(
                f"study --point: expected run=<id> or factor=value with factor in {FACTORS}, got {item!r}"
            )
        wanted[key] = value if key == "run" else yaml.safe_load(value)
    chosen = [
        spec
        for spec in study.specs()
        if all((spec.run_id if key == "run" else spec.factors.get(key)) == value for key, value in wanted.items())
    ]
    if not chosen:
        raise ConfigError(f"study --point {' '.join(items)}: no run of study {study.name!r} matches")
    return chosen


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="study YAML (configs/study/*.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--emit-sweep", metavar="PATH", help="write the W&B sweep config and exit")
    parser.add_argument("--point", nargs="+", metavar="FACTOR=VALUE", help="run one point (used by wandb agent)")
    parser.add_argument("--no-bench", action="store_true", help="skip the inference benchmark of the study's nets")
    parser.add_argument("--bench-device", default="cpu", help="device of the closing inference benchmark (cpu, cuda:N)")
    parser.add_argument("--jobs", type=int, default=1, help="fits at once, each its own process (default 1)")
    parser.add_argument(
        "--devices", help="GPUs to spread the jobs over, round-robin (e.g. 0,1; default: every visible GPU; 'cpu')"
    )
    parser.add_argument("--threads", type=int, help="CPU threads per fit (default: the cores split between jobs)")
    parser.add_argument(
        "--time-limit", type=float, metavar="MINUTES", help="start no run that would not end by then; stop at it"
    )
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the fits run")
    parser.add_argument("--slurm-partition", help="SLURM partition")
    parser.add_argument("--slurm-time", type=int, default=240, help="minutes per run (default 240)")
    parser.add_argument("--slurm-gpus-per-job", type=int, default=1, help="GPUs per run (default 1)")
    parser.add_argument("--slurm-parallelism", type=int, default=8, help="runs at once in the job array (default 8)")
    parser.add_argument("--slurm-cpus-per-job", type=int, default=8, help="CPU cores per run (default 8)")
    parser.add_argument(
        "--slurm-cluster",
        choices=("auto", "slurm", "local"),
        default="auto",
        help="submitit executor: auto (SLURM where sbatch is, else local), or local: the same array on this machine",
    )
    parser.add_argument("--wait", action="store_true", help="slurm: wait for the job array and report its outcome")
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: extra `lightclf fit` arguments for every run"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise ConfigError(f"study --jobs must be >= 1, got {args.jobs}")
    study = load_study(args.config)
    extra = [a for a in args.extra if a != "--"]
    if args.emit_sweep:
        Path(args.emit_sweep).parent.mkdir(parents=True, exist_ok=True)
        Path(args.emit_sweep).write_text(yaml.safe_dump(sweep_config(study, args.config), sort_keys=False))
        print(f"wrote {args.emit_sweep}: `wandb sweep {args.emit_sweep}` then `wandb agent <sweep id>` on each machine")
        return
    specs = ready_specs(study, select_point(study, args.point) if args.point else study.specs(), args.config)
    log_lock = threading.Lock()

    def log(message: str) -> None:
        # Whole lines under a lock: print() writes the text and the newline separately, so two
        # workers' lines could interleave.
        with log_lock:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    if args.launcher == "slurm":
        from lightclf.study.slurm import SlurmOptions, submit_study

        options = SlurmOptions.from_args(args, parallelism=args.slurm_parallelism)
        outcome = submit_study(study, args.config, specs, options, extra, dry_run=args.dry_run, wait=args.wait, log=log)
        _fail_on(outcome)
        return
    slots = None if args.dry_run else plan_slots(args.jobs, visible_gpus(args.devices), args.threads)
    print(f"study {study.name}: {len(specs)} runs into {study.save_dir}/{study.project}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SLURM's preemption signal: stop the fits cleanly
    if args.time_limit is not None and args.time_limit <= 0:
        raise ConfigError(f"study --time-limit must be > 0 minutes, got {args.time_limit}")
    deadline = time.time() + 60 * args.time_limit if args.time_limit else None
    outcome = run_study(
        study, extra, dry_run=args.dry_run, log=log, specs=specs, jobs=args.jobs, slots=slots, deadline=deadline
    )
    if not args.dry_run and not args.no_bench and not args.point:
        from lightclf.study.report import bench_study

        bench_study(study, device=args.bench_device)
    _fail_on(outcome)


def _configuration(spec: RunSpec) -> str:
    """The spec's factors without the seed, as a key."""
    return json.dumps({k: v for k, v in spec.factors.items() if k != "seed"}, sort_keys=True, default=str)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _fail_on(outcome: dict[str, str]) -> None:
    failed = [k for k, v in outcome.items() if v.startswith("failed")]
    if failed:
        exit_with_error(f"{len(failed)} run(s) failed: {', '.join(failed)}; re-run the study to retry", code=1)
