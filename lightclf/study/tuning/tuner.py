"""`lightclf tune`: every arm of a study tuned with the same Optuna search, on validation only.

Ask-and-tell in the runner (the pattern Optuna supports across processes): the tuner asks a trial,
draws its settings, starts one `lightclf fit --validation_only true` process per tuning seed, polls
the per-epoch validation top-1 each fit writes to its run folder, reports the mean over seeds to the
trial once every seed has reached an epoch, stops the fits when the pruner says so, and tells the
trial its value (the mean final validation top-1), PRUNED or FAIL. Rebuilding a live ``Trial`` in the
fit process (optuna-integration's Lightning callback) would need the trial there and, under DDP, an
RDB storage; the runner already owns the processes and their records, so it owns the trial too.

The Optuna studies (one per arm) live in one journal file (``lightclf.study.tuning.storage``: why a
journal and not SQLite).

Trials never run twice and never overshoot ``n_trials``: the count and the ``ask`` happen under one
file lock. Optuna's heartbeats do not work with ask-and-tell, so a trial whose runner died (a dead
pid on this host, an earlier try of this SLURM task) is marked FAIL by the next runner and its
settings re-queued; the retry resumes the dead trial's fits from their last checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightclf.errors import ConfigError
from lightclf.factors import Factors
from lightclf.runs import RunRecord
from lightclf.study.execution import (
    INTERRUPTED,
    Claim,
    Slot,
    forget_fit,
    holder_is_gone,
    resume_args,
    start_fit,
    stop_fits,
    stopping,
)
from lightclf.study.spec import RunSpec, Study
from lightclf.study.tuning.records import DIVERGED, ERROR, FIT_SECONDS, ROOT, RUNNER, SEED_VALUES, write_records
from lightclf.study.tuning.space import TuneSpec
from lightclf.study.tuning.storage import open_storage, storage_path

__all__ = ["Arm", "Tuner", "TrialOutcome", "tuning_arms", "trial_spec"]

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Arm:
    """One configuration of the study that is tuned: its key (stable hash of its factors), a label
    for people, and its first run's spec (the factors every tuning fit of the arm starts from)."""

    key: str
    label: str
    spec: RunSpec

    @property
    def optuna_name(self) -> str:
        return f"{self.spec.study}/{self.key}"


def tuning_arms(study: Study) -> list[Arm]:
    """The study's tuned arms in its order (those marked ``tune: false`` keep the recipe)."""
    return [
        Arm(spec.arm_key, Factors.from_study(spec.configuration).configuration.label, spec)
        for spec, tuned in study.arms()
        if tuned
    ]


def trial_spec(study: Study, tune: TuneSpec, arm: Arm, root: int, seed: int, params: dict[str, Any]) -> RunSpec:
    """The fit of one tuning seed of a trial: the arm's factors, the tuning budget and the trial's
    settings; grouped in W&B by the tuning study and tagged with the arm and the trial."""
    name = f"{study.name}-tune"
    return RunSpec(
        name,
        {**arm.spec.configuration, "seed": seed, "trial": root},
        data_seed=seed if study.split == "per_seed" else None,
        tuned={**tune.budget, **params},
        tags=(f"arm={arm.key}", arm.label[:60], f"trial={root}"),
        group=name,
    )


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended: COMPLETE (with its value), PRUNED, FAIL or STOPPED (re-queued)."""

    arm: str
    number: int
    state: str  # COMPLETE / PRUNED / FAIL / STOPPED (this runner was stopped: re-queued)
    value: float | None


class Tuner:
    """Runs the trials of every tuned arm until each has ``n_trials`` complete or pruned ones.

    ``slots``: where fits run; a trial takes ``len(seeds)`` of them at once (its seeds run side by
    side, so the pruner sees every seed's epoch at about the same time), and ``len(slots) //
    len(seeds)`` trials run at once."""

    def __init__(
        self,
        study: Study,
        slots: list[Slot],
        extra_args: list[str] | None = None,
        log=print,
        arms: list[Arm] | None = None,
        fit_command: list[str] | None = None,
    ) -> None:
        self.study = study
        tune = study.tuning
        if tune is None:
            raise ConfigError(f"study {study.name} has no tune: block (space, n_trials, seeds, budget)")
        self.tune: TuneSpec = tune
        self.arms = tuning_arms(study) if arms is None else arms
        if not self.arms:
            raise ConfigError(f"study {study.name}: no arm to tune (every arm has tune: false)")
        self.path = storage_path(study, tune)
        self.storage = open_storage(self.path)
        self.extra = list(extra_args or [])
        self.log = log
        self.fit_command = fit_command or [sys.executable, "-m", "lightclf"]
        per_trial = len(tune.seeds)
        self.slot_groups = [slots[i : i + per_trial] for i in range(0, len(slots) - per_trial + 1, per_trial)]
        if not self.slot_groups:
            raise ConfigError(f"tune: a trial runs its {per_trial} seeds at once and needs {per_trial} slots")
        self.outcomes: list[TrialOutcome] = []
        self._lock = threading.Lock()

    # -- Optuna objects ------------------------------------------------------------------------
    def optuna_study(self, arm: Arm, draw: int = 0):
        """The arm's Optuna study with this tuner's sampler and pruner (Optuna stores neither). The
        sampler's seed moves with ``draw`` (the trials so far), so two runners sharing the study
        draw different settings, and one runner redraws the same ones after a restart."""
        import optuna

        tune = self.tune
        seed = tune.sampler_seed * 100_003 + draw
        if tune.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        elif tune.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=tune.startup_trials)
        else:  # constant_liar: trials running in parallel count as bad guesses, so parallel asks spread out
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=tune.startup_trials, multivariate=True, constant_liar=True
            )
        if tune.pruner == "median":
            pruner = optuna.pruners.MedianPruner(
                n_startup_trials=tune.pruner_startup_trials
                if tune.pruner_startup_trials is not None
                else tune.startup_trials,
                n_warmup_steps=tune.pruner_warmup_epochs,
            )
        elif tune.pruner == "hyperband":
            pruner = optuna.pruners.HyperbandPruner(min_resource=1)
        else:
            pruner = optuna.pruners.NopPruner()
        return optuna.create_study(
            storage=self.storage,
            study_name=arm.optuna_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )

    def _ask(self) -> tuple[Arm, Any, dict[str, Any]] | None:
        """The next trial of the first arm with trials left (under the file lock: counted and asked
        as one step, so runners never overshoot ``n_trials``), or None when every arm is done."""
        from optuna.trial import TrialState

        with self._lock, open(f"{self.path}.ask.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            for arm in self.arms:
                ostudy = self.optuna_study(arm)
                self._reap_dead(ostudy)
                trials = ostudy.get_trials(deepcopy=False)
                counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
                failed = [t for t in trials if t.state == TrialState.FAIL and ERROR in t.user_attrs]
                if len(counted) >= self.tune.n_trials:
                    continue
                if len(failed) >= self.tune.n_trials:
                    raise ConfigError(
                        f"tune: arm {arm.label}: {len(failed)} trials failed (see their fit.log); "
                        "fix the config or the space"
                    )
                ostudy = self.optuna_study(arm, draw=len(trials))
                trial = ostudy.ask()
                trial.set_user_attr(RUNNER, Claim.holder())
                params = {p.key: p.suggest(trial) for p in self.tune.space}
                return arm, trial, params
        return None

    def _reap_dead(self, ostudy) -> None:
        """Trials left RUNNING by a runner that died: FAIL, and their settings queued again (the retry
        resumes their fits from the last checkpoints)."""
        from optuna.trial import TrialState

        for trial in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            holder = trial.user_attrs.get(RUNNER)
            if holder and holder_is_gone(holder):
                self._requeue(ostudy, trial.number, trial.params, trial.user_attrs.get(ROOT, trial.number), locked=True)
                self.log(f"tune: trial {trial.number} of {ostudy.study_name} lost its runner: re-queued")

    def _requeue(self, ostudy, number: int, params: dict[str, Any], root: int, locked: bool = False) -> None:
        """Mark a trial that is no result (its runner stopped or died) FAIL and queue its settings again,
        the retry keeping its fit folders (``root``). Under the ask lock, queued before the FAIL is told:
        another runner counting in between sees the trial either running or waiting, never missing."""
        from optuna.trial import TrialState

        with contextlib.ExitStack() as stack:
            if not locked:
                lock_file = stack.enter_context(open(f"{self.path}.ask.lock", "a"))
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            ostudy.enqueue_trial(params, user_attrs={ROOT: root})
            ostudy.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    # -- one trial -----------------------------------------------------------------------------
    def run_trial(self, arm: Arm, trial, params: dict[str, Any], slots: list[Slot]) -> TrialOutcome:
        from optuna.trial import TrialState

        root = int(trial.user_attrs.get(ROOT, trial.number))
        specs = [trial_spec(self.study, self.tune, arm, root, seed, params) for seed in self.tune.seeds]
        folders = [self.study.run_dir(spec) for spec in specs]
        started = time.time()
        procs = []
        never_started = False
        for spec, folder, slot in zip(specs, folders, slots):
            record = RunRecord.read(folder)
            if record.factors.get("tuned") != spec.tuned and folder.exists():
                shutil.rmtree(folder)  # another search's fit under this id (other settings or budget): start anew
                record = RunRecord.read(folder)
            if record.status in ("fit_done", "finished"):  # a retried trial whose fit had ended
                procs.append(None)
                continue
            RunRecord(folder=folder).write(RunRecord.STUDY, {"study": spec.study, **spec.factors, "tuned": spec.tuned})
            args = spec.cli_args(self.study.base_config, self.study.save_dir, self.study.project)
            args += ["--validation_only", "true", *self.extra, *resume_args(record)]
            proc = start_fit([*self.fit_command, *args], slot, folder / "fit.log")
            never_started |= proc is None  # this runner is stopping: the trial must not look finished
            procs.append(proc)
        described = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in params.items())
        self.log(f"tune: {arm.label} trial {trial.number}: {described}")
        reported: set[int] = set()
        pruned = False
        try:
            while True:
                curves = [_val_curve(folder) for folder in folders]
                common = set.intersection(*(set(c) for c in curves)) - reported
                last = _last_epoch(folders)
                for epoch in sorted(common):
                    trial.report(sum(c[epoch] for c in curves) / len(curves), epoch)
                    reported.add(epoch)
                    # After the last epoch the trial is done: its value is a result, not a pruning point.
                    if epoch != last and trial.should_prune():
                        pruned = True
                        break
                running = [p for p in procs if p is not None and p.poll() is None]
                failed = [p for p in procs if p is not None and p.poll() not in (None, 0)]
                if pruned or not running or failed or never_started or stopping.is_set():
                    break  # a failed seed fails the trial: its siblings stop too
                time.sleep(POLL_SECONDS)
            for proc in procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # the fit saves interrupted.ckpt and exits
            codes = [p.wait() if p is not None else (-15 if never_started else 0) for p in procs]
            if not pruned:  # epochs that ended between the last poll and the fits' exit
                curves = [_val_curve(folder) for folder in folders]
                for epoch in sorted(set.intersection(*(set(c) for c in curves)) - reported):
                    trial.report(sum(c[epoch] for c in curves) / len(curves), epoch)
        finally:
            for proc in procs:
                if proc is not None:
                    forget_fit(proc)
        curves = [_val_curve(folder) for folder in folders]
        finals = [c[max(c)] if c else None for c in curves]
        trial.set_user_attr(SEED_VALUES, finals)
        trial.set_user_attr(FIT_SECONDS, round(time.time() - started, 1) * len(folders))
        ostudy = trial.study
        if pruned:
            state, value = "PRUNED", None
            ostudy.tell(trial, state=TrialState.PRUNED)
        elif (
            never_started or (stopping.is_set() and any(c != 0 for c in codes)) or any(c in INTERRUPTED for c in codes)
        ):
            # This runner was stopped (Ctrl-C, SIGTERM, a time limit): the trial is not a result;
            # its settings are queued again and the retry resumes its fits.
            state, value = "STOPPED", None
            self._requeue(ostudy, trial.number, params, root)
        elif any(c != 0 for c in codes) or any(v is None for v in finals):
            errors = [RunRecord.read(f).error or "" for f in folders]
            bad = [str(f / "fit.log") for f, c in zip(folders, codes) if c != 0]
            if any(e.startswith("FloatingPointError") for e in errors):
                # Diverged (a non-finite loss): a real outcome of these settings, scored as chance would
                # be scored at worst (0), so every arm's budget counts the same trials and the sampler
                # learns to leave the region.
                trial.set_user_attr(DIVERGED, True)
                state, value = "COMPLETE", 0.0
                ostudy.tell(trial, value)
            else:
                trial.set_user_attr(ERROR, f"fit exit {max(codes, key=abs)}; log: {bad[0] if bad else folders[0]}")
                state, value = "FAIL", None
                ostudy.tell(trial, state=TrialState.FAIL)
                if 2 in codes:  # a config error fails every trial alike: stop at the first, in one line
                    raise ConfigError(f"tune: {arm.label}: a fit refused its config: {_error_line(bad[0])}")
        else:
            state, value = "COMPLETE", sum(finals) / len(finals)
            ostudy.tell(trial, value)
        if state != "STOPPED":
            for folder in folders:  # the trial is told: its checkpoints are of no further use
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        shown = f" val top-1 {100 * value:.2f}%" if value is not None else ""
        self.log(f"tune: {arm.label} trial {trial.number}: {state}{shown} ({(time.time() - started) / 60:.1f} min)")
        return TrialOutcome(arm.label, trial.number, state, value)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> list[TrialOutcome]:
        """Trials until every arm has its budget, ``len(slot_groups)`` at a time; records written after
        each trial (``tuning.csv``, ``picks.yaml``)."""
        errors: list[BaseException] = []

        def worker(slots: list[Slot]) -> None:
            while not stopping.is_set() and not errors:
                try:
                    asked = self._ask()
                    if asked is None:
                        return
                    outcome = self.run_trial(*asked, slots)
                    with self._lock:
                        self.outcomes.append(outcome)
                        write_records(self.study, self.tune, self.storage, self.arms)
                except BaseException as err:  # one line from the main thread; the other workers stop
                    errors.append(err)
                    return

        threads = [threading.Thread(target=worker, args=(group,), daemon=True) for group in self.slot_groups]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)
        except BaseException:
            # Ctrl-C / SIGTERM: stop the fits, then let each worker tell its trial (re-queued, so the next
            # run resumes its fits) before this process goes; a worker that cannot is reaped next time.
            stop_fits()
            for thread in threads:
                thread.join(90)
            raise
        if errors:
            raise errors[0]
        write_records(self.study, self.tune, self.storage, self.arms)
        return self.outcomes


def _val_curve(folder: Path) -> dict[int, float]:
    """Validation top-1 per finished epoch, from the fit's ``results.json``."""
    return {
        int(e["epoch"]): float(e["val/acc1"])
        for e in RunRecord.read(folder).val_per_epoch
        if "val/acc1" in e and "epoch" in e
    }


def _last_epoch(folders: list[Path]) -> int | None:
    """The fits' last epoch (0-based), once a fit has recorded its ``max_epochs``."""
    epochs = [RunRecord.read(folder).max_epochs for folder in folders]
    return max(epochs) - 1 if all(isinstance(e, int) and e > 0 for e in epochs) else None


def _error_line(log_path: str) -> str:
    """The fit's ``lightclf: error:`` line, from its log."""
    try:
        lines = Path(log_path).read_text().splitlines()
    except OSError:
        return f"see {log_path}"
    errors = [line.removeprefix("lightclf: error: ") for line in lines if line.startswith("lightclf: error:")]
    return f"{errors[-1]} (log: {log_path})" if errors else f"see {log_path}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
