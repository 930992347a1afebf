"""Settings a study picks on validation, never on test (``choices:`` in the study YAML).

Each ``Choice`` names options by their factors (e.g. a baseline at the recipe's peak LR and at
0.1); the option whose runs have the highest mean validation top-1 is picked. Test top-1 is shown
beside it for the reader, and plays no part in the pick. Torch-free, like the rest of the report.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from lightclf.factors import Choice
from lightclf.study.report.collect import RunRow

__all__ = ["ChoiceOutcome", "choose", "choice_table", "choice_csv_rows"]


@dataclass(frozen=True)
class OptionRuns:
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
    choice: Choice
    options: tuple[OptionRuns, ...]
    picked: str | None  # None until every option has a run with a validation figure


def choose(choice: Choice, runs: list[RunRow]) -> ChoiceOutcome:
    pool = [r for r in runs if r.factors.matches(choice.where)]
    options = tuple(
        OptionRuns(label, tuple(r for r in pool if r.factors.matches(wanted)))
        for label, wanted in choice.options.items()
    )
    if any(o.val_top1 is None for o in options):
        return ChoiceOutcome(choice, options, None)
    best = max(options, key=lambda o: o.val_top1)  # max keeps the first of equals: the listed order breaks ties
    return ChoiceOutcome(choice, options, best.label)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def choice_table(outcomes: list[ChoiceOutcome]) -> str:
    lines = [
        "| setting | option | runs (seeds) | val top-1 % | test top-1 % (not used to pick) | picked |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        for option in outcome.options:
            seeds = ", ".join(str(r.seed) for r in option.runs)
            picked = "not run yet" if outcome.picked is None else ("**yes**" if option.label == outcome.picked else "")
            lines.append(
                f"| {outcome.choice.name} | {option.label} | {len(option.runs)} ({seeds or '-'}) | "
                f"{_pct(option.val_top1)} | {_pct(option.top1)} | {picked} |"
            )
    return "\n".join(lines)


def choice_csv_rows(outcomes: list[ChoiceOutcome]) -> list[dict[str, object]]:
    return [
        {"setting": o.choice.name, "option": opt.label, "runs": len(opt.runs), "val_top1": opt.val_top1,
         "test_top1": opt.top1, "picked": o.picked == opt.label if o.picked is not None else None}
        for o in outcomes
        for opt in o.options
    ]  # fmt: skip
