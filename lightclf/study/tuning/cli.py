"""`python -m lightclf tune --config STUDY.yaml`: tune every arm of a study the same way, on validation."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.study.execution import kill_fits, plan_slots, stop_fits, visible_gpus, wait_for_fits
from lightclf.study.spec import Study, load_study

__all__ = ["main", "check_space"]


def check_space(study: Study, log=print) -> None:
    """Every tuned key must be a key of the fit config: ``lightclf fit --print_config`` with each key set
    to a value inside its range (one process, no training); its one-line error becomes ours."""
    from lightclf.study.tuning.tuner import trial_spec, tuning_arms

    tune = study.tuning
    spec = trial_spec(study, tune, tuning_arms(study)[0], 0, tune.seeds[0], {p.key: p.lowest for p in tune.space})
    args = spec.cli_args(study.base_config, study.save_dir, study.project) + [
        "--validation_only",
        "true",
        "--print_config",
    ]
    done = subprocess.run([sys.executable, "-m", "lightclf", *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].removeprefix("lightclf: error: ") if lines else f"exit {done.returncode}"
        raise ConfigError(f"tune.space / tune.budget: {reason}")


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf tune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="study YAML with a tune: block (or a tune YAML)")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once; each runs its seeds side by side")
    parser.add_argument("--devices", help="GPUs to spread the fits over (e.g. 0,1; default: every visible GPU; 'cpu')")
    parser.add_argument("--threads", type=int, help="CPU threads per fit (default: the cores split between fits)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop the running trials at it")
    parser.add_argument("--dry-run", action="store_true", help="print the arms, budget and storage; run nothing")
    parser.add_argument("--no-check", action="store_true", help="skip the config check of the space's keys")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the tuners run")
    parser.add_argument("--workers", type=int, default=4, help="slurm: tuner tasks in the job array (default 4)")
    parser.add_argument("--slurm-partition", help="SLURM partition")
    parser.add_argument("--slurm-time", type=int, default=240, help="minutes per task (default 240)")
    parser.add_argument("--slurm-gpus-per-job", type=int, default=1, help="GPUs per task (default 1)")
    parser.add_argument("--slurm-cpus-per-job", type=int, default=8, help="CPU cores per task (default 8)")
    parser.add_argument(
        "--slurm-cluster", choices=("auto", "slurm", "local"), default="auto", help="submitit executor (local: here)"
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: extra `lightclf fit` arguments")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise ConfigError(f"tune --jobs must be >= 1, got {args.jobs}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise ConfigError(f"tune --time-limit must be > 0 minutes, got {args.time_limit}")
    study = load_study(args.config)
    tune = study.tuning
    if tune is None:
        raise ConfigError(f"study config {args.config} has no tune: block (space, n_trials, seeds, budget)")
    from lightclf.study.tuning.storage import check_storage, storage_path
    from lightclf.study.tuning.tuner import Tuner, tuning_arms

    arms = tuning_arms(study)
    if not arms:
        raise ConfigError(f"study {study.name}: no arm to tune (every arm has tune: false)")
    extra = [a for a in args.extra if a != "--"]
    log_lock = threading.Lock()

    def log(message: str) -> None:
        with log_lock:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    banner = (
        f"tune {study.name}: {len(arms)} arm(s) x {tune.n_trials} trials x {len(tune.seeds)} seeds; "
        f"storage {storage_path(study, tune)}; records in {study.report_folder}"
    )
    if args.dry_run:
        log(banner)
        for arm in arms:
            log(f"  {arm.key}  {arm.label}")
        log("  " + tune.describe())
        return
    check_storage(storage_path(study, tune))  # an unwritable place: one line before anything runs
    if not args.no_check:
        check_space(study, log)
    log(banner)
    if args.launcher == "slurm":
        from lightclf.study.slurm import SlurmOptions, submit_tuners

        options = SlurmOptions.from_args(args, parallelism=args.workers)
        submit_tuners(study, args.config, args.workers, options, extra, log=log)
        return
    slots = plan_slots(args.jobs * len(tune.seeds), visible_gpus(args.devices), args.threads)
    tuner = Tuner(study, slots, extra, log=log)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    timer = None
    if args.time_limit:
        timer = threading.Timer(60 * args.time_limit, _time_up, args=(log,))
        timer.daemon = True
        timer.start()
    started = time.time()
    try:
        outcomes = tuner.run()
    except BaseException:
        stop_fits()  # Ctrl-C / SIGTERM: the trials in flight are re-queued, their fits resume next time
        wait_for_fits(60)
        kill_fits()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    counts = {state: sum(o.state == state for o in outcomes) for state in ("COMPLETE", "PRUNED", "FAIL", "STOPPED")}
    log(
        f"tune {study.name}: {len(outcomes)} trial(s) in {(time.time() - started) / 60:.1f} min "
        + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)
        + f"; wrote {study.report_folder / 'tuning.csv'} and picks.yaml"
    )


def _time_up(log) -> None:
    log("tune: time limit reached: stopping the running trials (they are re-queued and resume next time)")
    stop_fits()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
