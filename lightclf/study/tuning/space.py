"""A study's ``tune:`` block as typed records: the search space over config keys, the per-trial
budget, the seeds, the sampler and the pruner. YAML only (no torch, no Optuna), so ``study
--dry-run`` and ``report`` can read it cheaply.

Example (a study YAML, or a tune YAML of the same shape)::

    tune:
      n_trials: 12                # per arm: every arm gets the same budget
      seeds: [1000, 1001]         # the objective is the mean validation top-1 over these seeds
      budget: {trainer.max_epochs: 2, data.init_args.train_subset: 20000}
      space:
        model.optimizer.init_args.lr: {low: 0.02, high: 1.0, log: true}
        model.optimizer.init_args.weight_decay: {low: 1.0e-6, high: 1.0e-3, log: true}
        model.label_smoothing: {choices: [0.0, 0.1, 0.2]}
      sampler: {name: tpe, seed: 0}          # n_startup_trials: a third of n_trials by default
      pruner: {name: median, n_warmup_steps: 1}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lightclf.errors import ConfigError

__all__ = ["Param", "TuneSpec", "SAMPLERS", "PRUNERS"]

SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
# A pick this close to a bound (as a share of the range, in log space for log ranges) may sit on the
# edge of the space: the optimum could lie outside it.
EDGE_SHARE = 0.05


@dataclass(frozen=True)
class Param:
    """One tuned config key: a float or int range (log scale optional, int step optional) or choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @classmethod
    def parse(cls, key: str, raw: Any) -> Param:
        where = f"tune.space.{key}"
        if not isinstance(key, str) or "." not in key and key not in ("seed_everything",):
            raise ConfigError(f"{where}: a space key is a fit config key like model.optimizer.init_args.lr")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected {{low, high[, log, step, int]}} or {{choices: [...]}}, got {raw!r}")
        unknown = set(raw) - {"low", "high", "log", "int", "step", "choices"}
        if unknown:
            raise ConfigError(f"{where}: unknown fields {sorted(unknown)} (known: low, high, log, int, step, choices)")
        if "choices" in raw:
            choices = raw["choices"]
            if not isinstance(choices, list) or len(choices) < 2:
                raise ConfigError(f"{where}: choices must be a list of two or more values, got {choices!r}")
            if len(raw) > 1:
                raise ConfigError(f"{where}: choices cannot be combined with {sorted(set(raw) - {'choices'})}")
            return cls(key, choices=tuple(choices))
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}: a range needs low and high")
        low, high = raw["low"], raw["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            raise ConfigError(f"{where}: low and high must be finite numbers, got {low!r} and {high!r}")
        if not low < high:
            raise ConfigError(f"{where}: empty or reversed range: low {low} must be below high {high}")
        log = bool(raw.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs a positive low bound, got {low}")
        integer = bool(raw.get("int", False))
        step = raw.get("step")
        if step is not None and (not isinstance(step, (int, float)) or step <= 0 or log):
            raise ConfigError(f"{where}: step must be a positive number and cannot go with log, got {step!r}")
        return cls(key, float(low) if not integer else int(low), float(high) if not integer else int(high), log,
                   integer, step)  # fmt: skip

    def suggest(self, trial) -> Any:
        """Draw this key's value for an Optuna trial (its param name is the config key)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)

    @property
    def lowest(self) -> Any:
        """A value inside the space (the low bound, or the first choice): what a config check sets."""
        return self.choices[0] if self.choices is not None else self.low

    def on_edge(self, value: Any) -> bool:
        """True when a picked value lies within ``EDGE_SHARE`` of a bound (never for choices)."""
        if self.choices is not None or value is None:
            return False
        low, high, v = (math.log(x) if self.log else x for x in (self.low, self.high, float(value)))
        return min(v - low, high - v) <= EDGE_SHARE * (high - low)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{{{', '.join(map(str, self.choices))}}}"
        scale = ", log" if self.log else ""
        return f"[{self.low:g}, {self.high:g}{scale}]"


@dataclass(frozen=True)
class TuneSpec:
    """How every tuned arm of a study is tuned: the same space, trials, seeds and budget for each."""

    space: tuple[Param, ...]
    n_trials: int
    seeds: tuple[int, ...] = (1000, 1001)
    budget: dict[str, Any] = field(default_factory=dict)  # per-trial fit overrides (epochs, images)
    sampler: str = "tpe"
    sampler_seed: int = 0
    n_startup_trials: int | None = None  # default: a third of n_trials
    pruner: str = "median"
    pruner_startup_trials: int | None = None  # default: n_startup_trials
    pruner_warmup_epochs: int = 0  # epochs (0-based) a trial runs before it may be pruned
    storage: str | None = None  # the Optuna journal file; default <save_dir>/tuning/<study>.journal

    @classmethod
    def parse(cls, raw: Any) -> TuneSpec:
        if not isinstance(raw, dict):
            raise ConfigError(
                f"tune: expected a mapping (space, n_trials, seeds, budget, sampler, pruner), got {raw!r}"
            )
        known = {"space", "n_trials", "seeds", "budget", "sampler", "pruner", "storage"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"tune: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        space = raw.get("space")
        if not isinstance(space, dict) or not space:
            raise ConfigError("tune.space: name one or more config keys to tune")
        params = tuple(Param.parse(key, value) for key, value in space.items())
        n_trials = raw.get("n_trials")
        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            raise ConfigError(f"tune.n_trials must be an integer >= 1, got {n_trials!r}")
        seeds = raw.get("seeds", [1000, 1001])
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise ConfigError(f"tune.seeds must be a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"tune.seeds repeats a seed: {seeds}")
        budget = raw.get("budget") or {}
        if not isinstance(budget, dict):
            raise ConfigError(f"tune.budget must map fit config keys to values, got {budget!r}")
        clash = set(budget) & {p.key for p in params}
        if clash:
            raise ConfigError(f"tune: {sorted(clash)} are both tuned and fixed by tune.budget")
        sampler = _options("sampler", raw.get("sampler"), SAMPLERS, {"name", "seed", "n_startup_trials"})
        pruner = _options("pruner", raw.get("pruner"), PRUNERS, {"name", "n_startup_trials", "n_warmup_steps"})
        for section, options, key in (("sampler", sampler, "n_startup_trials"), ("pruner", pruner, "n_startup_trials"),
                                      ("pruner", pruner, "n_warmup_steps")):  # fmt: skip
            value = options.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"tune.{section}.{key} must be an integer >= 0, got {value!r}")
        storage = raw.get("storage")
        if storage is not None and not isinstance(storage, str):
            raise ConfigError(f"tune.storage must be a file path, got {storage!r}")
        return cls(
            space=params,
            n_trials=n_trials,
            seeds=tuple(seeds),
            budget=dict(budget),
            sampler=sampler.get("name", "tpe"),
            sampler_seed=int(sampler.get("seed", 0)),
            n_startup_trials=sampler.get("n_startup_trials"),
            pruner=pruner.get("name", "median"),
            pruner_startup_trials=pruner.get("n_startup_trials"),
            pruner_warmup_epochs=int(pruner.get("n_warmup_steps", 0)),
            storage=storage,
        )

    @property
    def startup_trials(self) -> int:
        """Random trials before the model-based sampler steps in: a third of the budget unless set
        (TPE's own default, 10, would leave a 12-trial search nearly random)."""
        return self.n_startup_trials if self.n_startup_trials is not None else max(1, self.n_trials // 3)

    def param(self, key: str) -> Param | None:
        return next((p for p in self.space if p.key == key), None)

    def describe(self) -> str:
        """One paragraph for the report's protocol."""
        space = "; ".join(f"{p.key} {p.describe()}" for p in self.space)
        budget = ", ".join(f"{k}={v}" for k, v in self.budget.items()) or "the study's own"
        pruner = "no pruning" if self.pruner == "none" else f"{self.pruner} pruner on per-epoch validation top-1"
        return (
            f"Every tuned arm: {self.n_trials} trials of {self.sampler.upper()} (seed {self.sampler_seed}, "
            f"{self.startup_trials} random start-up trials), {pruner}; objective = mean validation top-1 "
            f"over seeds {list(self.seeds)} (never test); per-trial budget: {budget}. Space: {space}."
        )


def _options(section: str, raw: Any, names: tuple[str, ...], known: set[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"tune.{section}: expected a name or a mapping, got {raw!r}")
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"tune.{section}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    if raw.get("name", names[0]) not in names:
        raise ConfigError(f"tune.{section}.name must be one of {names}, got {raw.get('name')!r}")
    return dict(raw)
