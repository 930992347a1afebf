"""A study's definition: the YAML (grid, extra runs, seeds, protocol) and the runs it names.

Read by the runner (which fits the runs), the report (which aggregates them) and the sweep
emitter; only YAML and JSON here, so ``study --dry-run`` and ``report`` start without torch.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightclf.errors import ConfigError
from lightclf.factors import fold_settings
from lightclf.runs import RunRecord, run_path

__all__ = ["FACTORS", "RunSpec", "Study", "load_study"]

FACTORS = ("network", "width_multiplier", "resolution", "dilation", "dilation_schedule", "small_input", "seed")
RUN_KEYS = (*FACTORS, "network_kwargs", "overrides")
# Keys of a run entry that steer how it runs without being factors (they never enter its run id).
RUN_OPTIONS = ("seeds", "tune")
SPLITS = ("fixed", "per_seed")
OVERRIDE_LABELS = {"train_subset": "n", "max_epochs": "ep", "lr": "lr"}  # short names in run names
NETWORK_KWARGS = ("width_multiplier", "dilation", "dilation_schedule", "small_input")


@dataclass
class RunSpec:
    """One point of a study: its factors and the extra network kwargs.

    ``data_seed`` sets the validation split (and subsets) when the study varies the split with the
    seed; ``tuned`` holds the fit keys its arm's tuning picked (applied, not factors: the arm stays one
    configuration); ``tags`` are extra W&B tags."""

    study: str
    factors: dict[str, Any]
    data_seed: int | None = None
    tuned: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    group: str | None = None  # W&B group (default: the study's name)
    recipe_fixed: bool = False  # an arm marked ``tune: false`` in a tuned study: it keeps the recipe

    @property
    def configuration(self) -> dict[str, Any]:
        """The factors without the seed: what the seeds of one arm share."""
        return {k: v for k, v in self.factors.items() if k != "seed"}

    @property
    def arm_key(self) -> str:
        """A short, stable key of the spec's configuration (its arm), e.g. for a tuning study's name."""
        return hashlib.sha1(json.dumps(self.configuration, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        """``<study>-<hash>`` of the factors and of what else sets the run apart: the arm's pick (a
        re-tuned arm's runs are new runs, never resumed or counted under another pick) and a split
        drawn from the seed (studies with one fixed split keep the ids they always had)."""
        identity = dict(self.factors)
        if self.tuned:
            identity["tuned"] = self.tuned
        if self.data_seed is not None:
            identity["split"] = "per_seed"
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.study[:20]}-{digest}"

    @property
    def name(self) -> str:
        f = fold_settings(self.factors)
        parts = [f["network"]]
        for key, short in (
            ("width_multiplier", "w"), ("resolution", "r"), ("dilation", "d"), ("dilation_schedule", ""), ("seed", "s"),
        ):  # fmt: skip
            if f.get(key) is not None:
                parts.append(f"{short}{f[key]}")
        parts += [f"{k}={v}" for k, v in (f.get("network_kwargs") or {}).items()]
        for key, value in (f.get("overrides") or {}).items():  # budgets and recipe changes, briefly
            leaf = key.rsplit(".", 1)[-1]
            parts.append(f"{OVERRIDE_LABELS.get(leaf, leaf + '=')}{value}")
        return "-".join(str(p) for p in parts)

    def cli_args(self, base_config: str | list[str], save_dir: str, project: str) -> list[str]:
        f = fold_settings(self.factors)  # factors named by config keys go where the fit takes them
        configs = [base_config] if isinstance(base_config, str) else list(base_config)
        kwargs = {k: f[k] for k in NETWORK_KWARGS if f.get(k) is not None}
        kwargs.update(f.get("network_kwargs") or {})
        tags = (
            [self.study, f["network"]]
            + [
                f"{k}={f[k]}"
                for k in ("width_multiplier", "resolution", "dilation", "dilation_schedule")
                if f.get(k) is not None
            ]
            + [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.factors.items() if "." in key]
            + list(self.tags)
            + (["tuned"] if self.tuned else [])
            + (["recipe"] if self.recipe_fixed else [])
        )
        args = [
            "fit",
            *(arg for config in configs for arg in ("--config", config)),
            "--model.network", f["network"],
            "--model.network_kwargs", json.dumps(kwargs),
            "--seed_everything", str(f.get("seed", 0)),
            "--trainer.logger.init_args.project", project,
            "--trainer.logger.init_args.save_dir", save_dir,
            "--trainer.logger.init_args.group", self.group or self.study,
            "--trainer.logger.init_args.name", self.name,
            "--trainer.logger.init_args.tags", json.dumps(tags),
        ]  # fmt: skip
        if "WANDB_SWEEP_ID" not in os.environ:  # a sweep agent owns the run id
            args += ["--trainer.logger.init_args.id", self.run_id]
        if f.get("resolution") is not None:
            args += ["--data.init_args.resolution", str(f["resolution"])]
        if self.data_seed is not None:
            args += ["--data.init_args.seed", str(self.data_seed)]
        for key, value in {**(f.get("overrides") or {}), **self.tuned}.items():
            args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return args


@dataclass
class Study:
    """A study: base fit config(s), grid and extra runs, seeds, protocol, questions, choices and tuning."""

    name: str
    base_config: str | list[str]  # one fit config, or several merged in order (model + recipe)
    grid: dict[str, list[Any]]
    runs: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    protocol: str = ""  # one paragraph for the report: data, recipe, what was cut to fit
    # Where finished runs' records (results/complexity/study JSON, no checkpoints) are archived:
    # committed with the report, they let `report` rebuild it and `study` skip those runs on a
    # machine that never had the run folders.
    records: str | None = None
    save_dir: str = "runs/study"
    project: str = "lightclf-study"
    bench: dict[str, Any] = field(default_factory=dict)
    order: str = "configurations"  # or "seeds": see specs()
    # Verdicts: an effect shown (TOST) to lie inside +-equivalence_margin is "equivalent"; see
    # lightclf.study.stats.judge.
    equivalence_margin: float = 0.003  # test top-1 as a fraction (0.003 = 0.3 points)
    # Questions the report answers with verdicts (lightclf.study.report.questions): name, a, b, where
    # and optionally reference (an effect reported elsewhere, held against the interval).
    questions: list[dict[str, Any]] = field(default_factory=list)
    # Questions asked outside the declared family (added after the protocol, or after results): the
    # report answers them in a labelled section of their own, Holm over them alone, so adding one never
    # changes the declared questions' adjusted p values.
    exploratory: list[dict[str, Any]] = field(default_factory=list)
    # Settings picked on validation top-1 (lightclf.factors.Choice): name, options, where.
    choices: list[dict[str, Any]] = field(default_factory=list)
    # per_seed: a run's seed also sets its validation split (and subsets), so the spread over seeds
    # includes the split's share of the variance (Bouthillier et al. 2021); fixed: one split (data.seed
    # of the base config) for every run, as the studies before the tuner had.
    split: str = "per_seed"
    # Tuning (lightclf.study.tuning): the same search, on validation, for every arm; the study's fits
    # then use each arm's pick (from ``picks.yaml`` beside the report). Arms with ``tune: false`` keep
    # the recipe.
    tune: dict[str, Any] | None = None
    # Where the report goes (tuning.csv and picks.yaml too); default reports/<name>.
    report_dir: str | None = None
    # One line at the top of the report pointing to the study that reruns its questions better.
    superseded_by: str | None = None
    # What the configuration report says about whose runs (roles, knobs, the proposed net against the
    # baselines, a paper's claim): a mapping, or the path of a YAML file with one
    # (lightclf.study.report.plan; the DDSNet studies name configs/report/ddsnet.yaml).
    report: str | dict[str, Any] | None = None
    # An earlier study whose questions this one takes up: its verdicts.csv, a label, new -> old
    # question names; the question report shows both verdicts (lightclf.study.report.previous).
    previous: dict[str, Any] | None = None

    @functools.cached_property
    def report_plan(self):
        """The declared roles, knobs and comparisons (lightclf.study.report.plan.ReportPlan), read
        once: the report, the W&B report and the summary run each ask for it."""
        from lightclf.study.report.plan import load_plan

        return load_plan(self.report)

    @property
    def report_folder(self) -> Path:
        return Path(self.report_dir or Path("reports") / self.name)

    @property
    def tuning(self):
        """The parsed ``tune:`` block (``lightclf.study.tuning.space.TuneSpec``), or None."""
        if not self.tune:
            return None
        from lightclf.study.tuning.space import TuneSpec

        return TuneSpec.parse(self.tune)

    def picks(self) -> dict[str, dict[str, Any]]:
        """Each tuned arm's picked settings, by arm key (``picks.yaml``, written by ``lightclf tune``)."""
        if not self.tune:
            return {}
        from lightclf.study.tuning.records import read_picks

        raw = read_picks(self.report_folder)
        return {key: dict(entry.get("params") or {}) for key, entry in raw.items() if isinstance(entry, dict)}

    def specs(self) -> list[RunSpec]:
        """The grid's cartesian product, then the extra runs, in order.

        ``order: configurations`` (default): every seed of one point before the next. ``order: seeds``:
        consecutive points with the same seed list run seed by seed (seed 0 of each, then seed 1 of
        each, ...), so a study stopped at any time leaves paired seeds of those points.
        """
        keys = list(self.grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        points += [dict(run) for run in self.runs]
        groups: list[tuple[list[int], list[dict[str, Any]]]] = []
        fixed: set[str] = set()
        for point in points:
            seeds = list(point.pop("seeds", None) or self.seeds)
            if point.pop("tune", True) is False:
                fixed.add(json.dumps(point, sort_keys=True))
            if self.order == "seeds" and groups and groups[-1][0] == seeds:
                groups[-1][1].append(point)
            else:
                groups.append((seeds, [point]))
        specs, seen = [], set()
        for seeds, group in groups:
            pairs = (
                [(p, s) for s in seeds for p in group]
                if self.order == "seeds"
                else [(p, s) for p in group for s in seeds]
            )
            for point, seed in pairs:
                factors = {**point, "seed": seed}
                key = json.dumps(factors, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    data_seed = seed if self.split == "per_seed" else None
                    fixed_recipe = bool(self.tune) and json.dumps(point, sort_keys=True) in fixed
                    specs.append(RunSpec(self.name, factors, data_seed=data_seed, recipe_fixed=fixed_recipe))
        return specs

    def arms(self) -> list[tuple[RunSpec, bool]]:
        """Each configuration (arm) once, in the study's order, with whether it is tuned (False for
        entries marked ``tune: false``, which keep the recipe, and for every arm of a study without
        a ``tune:`` block). The spec is the arm's first run."""
        out, seen = [], set()
        for spec in self.specs():
            if spec.arm_key not in seen:
                seen.add(spec.arm_key)
                out.append((spec, bool(self.tune) and not spec.recipe_fixed))
        return out

    def with_picks(self, specs: list[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
        """The specs that can run now, each tuned arm's carrying its pick, and those whose arm has no
        pick yet (their tuning has not finished)."""
        if not self.tune:
            return specs, []
        picks = self.picks()
        ready, waiting = [], []
        for spec in specs:
            if spec.recipe_fixed:
                ready.append(spec)
            elif spec.arm_key in picks:
                spec.tuned = dict(picks[spec.arm_key])
                ready.append(spec)
            else:
                waiting.append(spec)
        return ready, waiting

    def run_dir(self, spec: RunSpec) -> Path:
        return run_path(self.save_dir, self.project, spec.run_id)

    def record(self, spec: RunSpec) -> RunRecord:
        """The run's record: its folder if this machine has one, else the archived copy, else empty."""
        local = RunRecord.read(self.run_dir(spec))
        if local.status == "new" and self.records:
            archived = RunRecord.read(Path(self.records) / spec.run_id)
            if archived.finished:
                return archived
        return local


def load_study(path: str | Path) -> Study:
    """Read and check a study YAML (one-line errors), without torch."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study config {path} not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"study config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"study config {path} must be a mapping")
    known = set(Study.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"study config {path}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    for key in ("name", "base_config", "grid"):
        if key not in raw:
            raise ConfigError(f"study config {path}: missing '{key}'")
    bad = {k for k in raw["grid"] if k not in (*FACTORS, "network_kwargs") and "." not in k}
    if bad:
        raise ConfigError(
            f"study config {path}: grid factors {sorted(bad)} unknown (use {FACTORS} or any fit config key, "
            "e.g. model.network_kwargs.drop_rate)"
        )
    if "network" not in raw["grid"]:
        raise ConfigError(f"study config {path}: grid needs a 'network' list")
    for run in raw.get("runs", []):
        if "network" not in run:
            raise ConfigError(f"study config {path}: every entry of 'runs' needs a 'network'")
        bad = {k for k in run if k not in (*RUN_KEYS, *RUN_OPTIONS) and "." not in k}
        if bad:
            raise ConfigError(f"study config {path}: run keys {sorted(bad)} unknown (use {RUN_KEYS} or {RUN_OPTIONS})")
        if run.get("tune", False) not in (True, False):
            raise ConfigError(f"study config {path}: a run's tune must be true or false, got {run['tune']!r}")
    if raw.get("split", "per_seed") not in SPLITS:
        raise ConfigError(f"study config {path}: split must be one of {SPLITS}, got {raw['split']!r}")
    if raw.get("tune") is not None:
        from lightclf.factors import ALIASES
        from lightclf.study.tuning.space import TuneSpec

        tune = TuneSpec.parse(raw["tune"])  # a broken search space: one line now, before anything runs
        varied = set(raw["grid"]) | {k for run in raw.get("runs") or [] for k in run}
        varied |= (
            {ALIASES.get(k, k) for k in varied}
            | {f"model.network_kwargs.{k}" for run in raw.get("runs") or [] for k in (run.get("network_kwargs") or {})}
            | {k for run in raw.get("runs") or [] for k in (run.get("overrides") or {})}
        )
        clash = sorted({p.key for p in tune.space} & varied)
        if clash:
            raise ConfigError(
                f"study config {path}: {clash} both set the arms apart and are tuned: the pick would overwrite the arms"
            )
    if raw.get("questions") or raw.get("exploratory") or raw.get("choices"):
        from lightclf.factors import Choice, Question

        for question in [*(raw.get("questions") or []), *(raw.get("exploratory") or [])]:
            Question.parse(question)  # unknown factors or a missing arm: one line now, not at report time
        declared = {q["name"] for q in raw.get("questions") or []}
        twice = sorted(declared & {q["name"] for q in raw.get("exploratory") or []})
        if twice:
            raise ConfigError(
                f"study config {path}: {twice} both declared and exploratory: a question belongs to one family"
            )
        for choice in raw.get("choices") or []:
            Choice.parse(choice)
    if raw.get("report") is not None:
        from lightclf.study.report.plan import load_plan

        load_plan(raw["report"])  # a malformed declaration: one line now, not at report time
    if raw.get("previous") is not None:
        from lightclf.study.report.previous import Previous

        previous = Previous.parse(raw["previous"])
        asked = {q.get("name") for q in raw.get("questions") or [] if isinstance(q, dict)}
        if set(previous.questions) - asked:
            raise ConfigError(
                f"study config {path}: previous names questions this study does not ask: "
                f"{sorted(set(previous.questions) - asked)}"
            )
    if raw.get("order", "configurations") not in ("configurations", "seeds"):
        raise ConfigError(f"study config {path}: order must be 'configurations' or 'seeds', got {raw['order']!r}")
    bases = [raw["base_config"]] if isinstance(raw["base_config"], str) else raw["base_config"]
    for base in bases:
        if not Path(base).is_file():
            raise ConfigError(f"study config {path}: base_config {base} not found")
    return Study(**raw)
