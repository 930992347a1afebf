"""What changed from an earlier study: its committed verdicts beside this study's, question by question.

A study that reruns another's questions better (tuned arms, a longer budget, more seeds) names the
earlier ``verdicts.csv`` and which of its questions each new one takes up, in its YAML::

    previous:
      verdicts: reports/fmnist_dilation/verdicts.csv
      label: untuned study (recipe LR, 8 epochs, 9 seeds, fixed split)
      questions: {"late dilation vs none (w0.25, tuned, plateau budget)": "late dilation vs none (w0.25, 8 epochs)"}

and the question report gets a table: question, the old effect, interval, n and verdict, the new ones,
and whether the verdict changed. Reading a CSV is all it does: the old study is never recomputed.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightclf.errors import ConfigError
from lightclf.study.stats import Verdict

__all__ = ["Previous", "changes_table"]


@dataclass(frozen=True)
class Previous:
    """An earlier study's verdicts file, how to call that study, and new question -> old question."""

    verdicts: str
    label: str
    questions: dict[str, str]

    @classmethod
    def parse(cls, raw: Any) -> Previous:
        if not isinstance(raw, dict) or not raw.get("verdicts") or not isinstance(raw.get("questions"), dict):
            raise ConfigError("study previous: needs verdicts (a verdicts.csv path) and questions (new: old)")
        unknown = set(raw) - {"verdicts", "label", "questions"}
        if unknown:
            raise ConfigError(f"study previous: unknown keys {sorted(unknown)} (known: label, questions, verdicts)")
        return cls(str(raw["verdicts"]), str(raw.get("label") or raw["verdicts"]), dict(raw["questions"]))

    def rows(self) -> dict[str, dict[str, str]]:
        """The earlier verdicts.csv by question (a one-line error if it is missing)."""
        path = Path(self.verdicts)
        if not path.is_file():
            raise ConfigError(f"study previous: {path} not found")
        with path.open(newline="") as fh:
            return {row["question"]: row for row in csv.DictReader(fh)}


def _points(value: str | float | None, signed: bool = True) -> str:
    if value in (None, ""):
        return "-"
    return f"{100 * float(value):{'+' if signed else ''}.2f}"


def _old_word(row: dict[str, str]) -> str:
    """The earlier verdict, with a one-seed row named as such (older files called it inconclusive) and
    a question the earlier study asked outside its declared family marked exploratory."""
    word = "one seed: no verdict" if row.get("n") == "1" else row["verdict"]
    return f"{word} (exploratory)" if row.get("family") == "exploratory" else word


def changes_table(previous: Previous, verdicts: list[Verdict], out_dir: Path) -> list[str]:
    """Markdown lines: a heading, one sentence and the table (none when no question maps); the link
    to the earlier verdicts is relative to the report's folder ``out_dir``."""
    old = previous.rows()
    missing = sorted(set(previous.questions.values()) - set(old))
    if missing:
        raise ConfigError(f"study previous: {previous.verdicts} has no question {missing[0]!r}")
    link = os.path.relpath(Path(previous.verdicts).resolve(), Path(out_dir).resolve())
    lines = [
        f"## What changed from the {previous.label}",
        "",
        f"Each question beside the one it takes up in [{previous.verdicts}]({link}) (effect in",
        "points with its 95% interval and n; 'changed' compares the verdict words).",
        "",
        "| question | before: effect [95% CI], n | before | now: effect [95% CI], n | now | changed |",
        "|---|---|---|---|---|---|",
    ]
    for verdict in verdicts:
        before = old.get(previous.questions.get(verdict.name, ""))
        if before is None:
            continue
        e = verdict.effect
        now = f"{_points(e.mean)} [{_points(e.ci_low)}, {_points(e.ci_high)}], {e.n}" if e.n else "not run yet"
        was = f"{_points(before['effect'])} [{_points(before['ci_low'])}, {_points(before['ci_high'])}], {before['n']}"
        word = verdict.word if e.n else "-"
        # One seed, or an interim look, gives no verdict: nothing to compare yet, so no "changed" either.
        undecided = e.n < 2 or verdict.interim
        changed = (
            "-" if undecided else ("no" if word == _old_word(before).removesuffix(" (exploratory)") else "**yes**")
        )
        lines.append(f"| {verdict.name} | {was} | {_old_word(before)} | {now} | {word} | {changed} |")
    return lines + [""] if len(lines) > 7 else []
