"""Settings a study picks on validation, never on test (``choices:`` in the study YAML).

Each ``Choice`` names options by their factors (e.g. a baseline at the recipe's peak LR and at
0.1); the option whose runs have the highest mean validation top-1 (at fit end: the last epoch's)
is picked, over the seeds every option has, so a partial study never weighs three seeds of one
option against one of another. Test top-1 is shown beside it for the reader and plays no part in
the pick. The pick is reported, not applied: a question that should use it names it in its arms.
Torch-free, like the rest of the report.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lightclf.errors import ConfigError
from lightclf.factors import Choice
from lightclf.study.report.collect import RunRow

__all__ = ["OptionRuns", "ChoiceOutcome", "choose", "choice_table", "choice_csv_rows"]


@dataclass(frozen=True)
class OptionRuns:
    """One option of a choice and its runs on the seeds all options share."""

    label: str
    runs: tuple[RunRow, ...]

    @property
    def val_top1(self) -> float | None:
        values = [r.val_top1 for r in self.runs if r.val_top1 is not None]
        return statistics.fmean(values) if values else None

    @property
    def top1(self) -> float | None:
        values = [r.top1 for r in self.runs if r.top1 is not None]
        return statistics.fmean(values) if values else None


@dataclass(frozen=True)
class ChoiceOutcome:
    """A choice's options and the one picked; ``picked`` is None while some option has no run."""

    choice: Choice
    options: tuple[OptionRuns, ...]
    picked: str | None

    @property
    def waiting_for(self) -> list[str]:
        return [o.label for o in self.options if o.val_top1 is None]


def choose(choice: Choice, runs: list[RunRow]) -> ChoiceOutcome:
    """Pick the option with the highest mean validation top-1; ties go to the option listed first."""
    pool = [r for r in runs if r.factors.matches(choice.where) and r.val_top1 is not None]
    matched = {label: [r for r in pool if r.factors.matches(wanted)] for label, wanted in choice.options.items()}
    seen: dict[str, str] = {}
    for label, members in matched.items():
        for run in members:
            if run.run_id in seen:
                raise ConfigError(
                    f"study choices: {choice.name!r}: run {run.run_id} matches options {seen[run.run_id]!r} "
                    f"and {label!r}; name the factor that tells them apart"
                )
            seen[run.run_id] = label
    shared = set.intersection(*({r.seed for r in members} for members in matched.values()))
    if not shared:  # some option has no run yet: show what there is, pick nothing
        return ChoiceOutcome(choice, tuple(OptionRuns(k, tuple(v)) for k, v in matched.items()), None)
    options = tuple(OptionRuns(k, tuple(r for r in v if r.seed in shared)) for k, v in matched.items())
    best = max(options, key=lambda o: o.val_top1)  # max keeps the first of equals: the listed order
    return ChoiceOutcome(choice, options, best.label)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _picked_cell(outcome: ChoiceOutcome, option: OptionRuns) -> str:
    if outcome.picked is None:
        missing = outcome.waiting_for
        return "waiting for " + ", ".join(missing) if missing else "no seed run by every option yet"
    return "**yes**" if option.label == outcome.picked else ""


def choice_table(outcomes: list[ChoiceOutcome]) -> str:
    """The markdown table of the study's settings picked on validation."""
    lines = [
        "| setting | option | runs (seeds) | val top-1 % | test top-1 % (not used to pick) | picked |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        for option in outcome.options:
            seeds = ", ".join(str(r.seed) for r in option.runs) or "-"
            lines.append(
                f"| {outcome.choice.name} | {option.label} | {len(option.runs)} ({seeds}) | "
                f"{_pct(option.val_top1)} | {_pct(option.top1)} | {_picked_cell(outcome, option)} |"
            )
    return "\n".join(lines)


def choice_csv_rows(outcomes: list[ChoiceOutcome]) -> list[dict[str, object]]:
    """The rows of ``choices.csv``: each option of each choice with its figures."""
    return [
        {"setting": o.choice.name, "option": opt.label, "runs": len(opt.runs), "val_top1": opt.val_top1,
         "test_top1": opt.top1, "picked": o.picked == opt.label if o.picked is not None else None}
        for o in outcomes
        for opt in o.options
    ]  # fmt: skip
