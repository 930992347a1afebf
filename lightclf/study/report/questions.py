"""A study's questions and their verdicts, and the report built around them.

A study YAML may ask questions: each compares the runs matching ``b`` with those matching ``a``
(Factors fields), among the runs matching ``where``. Runs that agree on every other factor and the
seed are paired; when none pair, the groups are compared unpaired (Welch). Each answer is an
effect on test top-1 with its 95% interval, the minimum effect its n could detect (80% power), the
Holm-adjusted p over the study's questions and a verdict against the study's equivalence margin
(``lightclf.study.stats.judge``).

``write_question_report`` writes ``report.md`` (protocol, verdicts and the configurations each
arm drew on (``compare``), settings chosen on validation,
receptive fields per block and per schedule and the measured effective receptive fields
(``lightclf.study.report.fields``), how far the runs still climbed (``curves``),
every configuration), ``runs.csv``, ``verdicts.csv`` and ``choices.csv``. Torch-free, like the rest of
the report.
"""

from __future__ import annotations

from pathlib import Path

from lightclf.factors import Choice, Factors, Question
from lightclf.study.report.cells import mean_std
from lightclf.study.report.choices import choice_csv_rows, choice_table, choose
from lightclf.study.report.collect import ConfigurationRow, RunRow, aggregate
from lightclf.study.report.comparisons import Comparison, compare
from lightclf.study.report.curves import curves_section
from lightclf.study.report.fields import erf_section, geometry_section
from lightclf.study.report.previous import Previous, changes_table
from lightclf.study.report.tuning import tuning_section
from lightclf.study.spec import Study
from lightclf.study.stats import (
    Effect,
    Improvement,
    Verdict,
    judge,
)
from lightclf.tables import write_csv

__all__ = [
    "Question",
    "Comparison",
    "collect_results",
    "compare",
    "compare_all",
    "answer",
    "answer_all",
    "write_question_report",
]


def collect_results(study: Study) -> list[RunRow]:
    """Every finished, tested run of the study (its folder here, else its archived record)."""
    out = []
    for spec in study.with_picks(study.specs())[0]:  # tuned arms' runs are named by their pick
        record = study.record(spec)
        if record.finished and "test/acc1" in record.test_metrics:
            out.append(RunRow.from_record(record, Factors.from_study({**spec.factors}), spec.run_id))
    return out


def answer(question: Question, runs: list[RunRow], margin: float) -> tuple[Effect, tuple]:
    """``b - a`` on top-1: paired by seed and every other factor where runs pair, else Welch."""
    return compare(question, runs).effect(margin)


def compare_all(study: Study, runs: list[RunRow], exploratory: bool = False) -> list[tuple[Question, Comparison]]:
    """Each of the study's declared questions (or its exploratory ones) with the runs it compares."""
    asked = study.exploratory if exploratory else study.questions
    return [(question, compare(question, runs)) for question in map(Question.parse, asked)]


def planned_runs(question: Question, comparison: Comparison, planned: list[RunRow]) -> tuple[int, int]:
    """(runs finished, runs planned) in the question's two arms: the same selection over ``planned``,
    a row for every spec of the study, run or not. Runs, not pairs: a Welch question's smaller arm can
    be complete while the other is not."""
    full = compare(question, planned)
    return len(comparison.a) + len(comparison.b), len(full.a) + len(full.b)


def answer_all(study: Study, compared: list[tuple[Question, Comparison]]) -> list[Verdict]:
    """The verdicts on ``compare_all``'s comparisons, Holm-adjusted over the questions tested (one
    family: the declared questions, or the exploratory ones); a question short of its planned runs
    is an interim look (``Verdict.planned``)."""
    named = [(question.name, *comparison.effect(study.equivalence_margin)) for question, comparison in compared]
    every_spec = [RunRow(Factors.from_study({**spec.factors}), spec.run_id) for spec in study.specs()]
    planned = [planned_runs(question, comparison, every_spec) for question, comparison in compared]
    return judge(named, study.equivalence_margin, planned)


# -- the report ------------------------------------------------------------------------------------
def _pts(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _p(value: float | None) -> str:
    return "-" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _verdict_table(verdicts: list[Verdict], improvements: list[Improvement | None]) -> str:
    head = (
        "| question | effect (points) | n | 95% CI | min. detectable (80% power) | p | Holm p | verdict "
        "| P(b > a) [95% CI] | P-rule call |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for v, better in zip(verdicts, improvements):
        e = v.effect
        kind = "pairs" if e.paired else "per group, Welch"
        ci = f"[{_pts(e.ci_low, True)}, {_pts(e.ci_high, True)}]" if e.ci_low is not None else "-"
        p, holm = _p(v.p_value), _p(v.p_holm)
        if e.n == 0:
            lines.append(f"| {v.name} | - | 0 | - | - | - | - | not run yet | - | - |")
            continue
        prob, call = "-", "-"
        if better is not None:
            prob = f"{better.p:.2f} [{better.ci_low:.2f}, {better.ci_high:.2f}]"
            call = "interim" if v.interim else better.call + (" (differs)" if _disagree(v, better) else "")
        lines.append(
            f"| {v.name} | {_pts(e.mean, True)} | {e.n} {kind} | {ci} | {_pts(v.mde)} | {p} | {holm} | **{v.word}** "
            f"| {prob} | {call} |"
        )
    return "\n".join(lines)


def _disagree(verdict: Verdict, better: Improvement) -> bool:
    """The t-test verdict and the probability-of-improvement call point different ways (one says better
    or worse, the other does not say the same)."""
    decided = verdict.word if verdict.word in ("better", "worse") else "no call"
    return decided != better.call


def _reference_lines(compared: list[tuple[Question, Comparison]], verdicts: list[Verdict]) -> list[str]:
    """Where each effect reported elsewhere (a question's ``reference``) falls against this study's 95%
    interval. Outside it, a two-sided t test rejects that effect at p < 0.05 (not Holm-adjusted, and
    only under this study's protocol); an interim look places it but makes no call, as its verdict does."""
    lines = []
    for (question, _), v in zip(compared, verdicts):
        ref, e = question.reference, v.effect
        if ref is None:
            continue
        claim = f"- {question.name}: {ref.source} reported {_pts(ref.effect, True)} points"
        if e.ci_low is None or e.ci_high is None or e.ci_low == e.ci_high:
            lines.append(f"{claim}; no interval here yet (n = {e.n}, or no spread between its runs).")
            continue
        interval = f"the 95% interval here is [{_pts(e.ci_low, True)}, {_pts(e.ci_high, True)}] (n = {e.n})"
        side = "inside" if e.ci_low <= ref.effect <= e.ci_high else "above" if ref.effect > e.ci_high else "below"
        if v.interim:
            lines.append(f"{claim}; {interval}, and it lies {side} it for now: an interim look, no call yet.")
        elif side == "inside":
            lines.append(f"{claim}; {interval}, so it lies inside: these runs cannot tell it from what they measured.")
        else:
            lines.append(
                f"{claim}; {interval}, so it lies {side} it: under this protocol an effect that size is rejected"
                " (two-sided t test, p < 0.05, not adjusted for the other questions)."
            )
    return ["Effects reported elsewhere, against these intervals:", "", *lines, ""] if lines else []


def _arms_table(compared: list[tuple[Question, Comparison]]) -> str:
    """Which configurations (and how many runs) each arm of each question drew on, so that an arm
    that also caught runs it was not meant to (a later override, another budget) shows."""
    lines = [
        "| question | first arm | second arm | runs left unpaired |",
        "|---|---|---|---|",
    ]
    for question, comparison in compared:
        cells = []
        for arm in (comparison.a, comparison.b):
            configurations = Comparison.configurations(arm)
            cell = "; ".join(f"{label}: {n} run{'s' if n != 1 else ''}" for label, n in configurations.items()) or "-"
            cells.append(cell + (f" **({len(configurations)} configurations)**" if len(configurations) > 1 else ""))
        left = str(comparison.unpaired) if comparison.pairs else "- (Welch)" if comparison.a and comparison.b else "-"
        lines.append(f"| {question.name} | {cells[0]} | {cells[1]} | {left} |")
    return "\n".join(lines)


def _configuration_table(rows: list[ConfigurationRow]) -> str:
    head = "| configuration | n | top-1 % (mean ± std) | 95% CI | val top-1 % | params | MACs | RF px | ERF r50 / r95 px | seeds |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s, members, first = row.top1, row.runs, row.first
        ci = f"{_pts(s.ci_low)}-{_pts(s.ci_high)}" if s.ci_low is not None else "-"
        erf = f"{mean_std([m.erf_r50 for m in members], digits=1)} / {mean_std([m.erf_r95 for m in members], digits=1)}"
        lines.append(
            f"| {row.label} | {s.n} | {mean_std([m.top1 for m in members], 100)} | {ci} | "
            f"{mean_std([m.val_top1 for m in members], 100)} | {(first.params or 0) / 1e6:.3f}M | "
            f"{(first.macs or 0) / 1e6:.1f}M | {first.receptive_field or '-'} | {erf} | "
            f"{', '.join(str(seed) for seed in row.seeds)} |"
        )
    return "\n".join(lines)


def _devices_section(runs: list[RunRow]) -> list[str]:
    """Which device trained which runs of each configuration, when any run recorded its device (a
    study whose runs moved between machines, or from the CPU to a GPU, says which rows came from where)."""
    if not any(run.device for run in runs):
        return []
    seeds: dict[tuple[str, str], list] = {}
    for run in runs:
        device = run.device or "not recorded (runs before lightclf recorded devices)"
        seeds.setdefault((device, run.factors.configuration.label), []).append(run.seed)
    lines = ["| device | configuration | runs (seeds) |", "|---|---|---|"]
    for (device, label), found in sorted(seeds.items()):
        lines.append(f"| {device} | {label} | {len(found)} ({', '.join(map(str, sorted(found)))}) |")
    return ["## Where the runs ran", "", *lines, ""]


def write_question_report(study: Study, out_root: str | Path | None = None, notes: str = "") -> Path:
    """Write the question report (report.md, runs.csv, verdicts.csv) for a study."""
    out_dir = Path(out_root) / study.name if out_root is not None else study.report_folder
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = collect_results(study)
    compared = compare_all(study, runs)
    verdicts = answer_all(study, compared)
    improvements = [comparison.improvement() for _, comparison in compared]
    extra = compare_all(study, runs, exploratory=True)
    extra_verdicts = answer_all(study, extra)
    extra_improvements = [comparison.improvement() for _, comparison in extra]
    rows = aggregate(runs)
    planned = len(study.specs())
    # Protocol first, then a verdict per question; the study's notes (status, caveats) follow them.
    parts = [f"# Study `{study.name}`", ""]
    if study.superseded_by:
        parts += [f"> Superseded by {study.superseded_by}; this report stays as it was run.", ""]
    parts += [
        f"**{len(runs)} of {planned} planned runs finished**"
        + (
            ""
            if len(runs) == planned
            else " (the study resumes: `lightclf study --config ...`; this report is partial)."
        ),
        "",
        "## Protocol",
        "",
        study.protocol.strip(),
        "",
        *tuning_section(study, out_dir),
        f"## Verdicts (equivalence margin ±{100 * study.equivalence_margin:g} points, Holm over the questions tested)",
        "",
        "Effect = test top-1 of the second arm minus the first, in points; paired by seed and every other",
        "factor where the runs pair, else Welch. 'Min. detectable' is the true effect the n could detect",
        "with 80% power (two-sided 5%) at the observed spread; a verdict of 'inconclusive' with a large",
        "minimum detectable effect means the seeds could not have told. P(b > a) is the probability of",
        "improvement (Bouthillier et al. 2021): the share of paired seeds where b beats a, with its exact 95%",
        "interval (unpaired arms: the share of cross pairs, bootstrap interval); their rule calls b better when",
        "it exceeds 0.75 and the interval's low end 0.5. '(differs)' marks a question where that call and the",
        "t-test verdict disagree.",
        "",
        _verdict_table(verdicts, improvements),
        "",
        *_reference_lines(compared, verdicts),
        "What each verdict compared: the configurations each arm's runs belong to. An arm spanning several",
        "is flagged: right for a question that pools them (pairs form within each), a slip otherwise.",
        "",
        _arms_table(compared),
        "",
    ]
    if extra:
        parts += [
            "## Exploratory questions (outside the declared family)",
            "",
            "Asked outside the protocol declared before the runs (after it, or after results). Holm runs over",
            "these questions alone, so they leave the declared verdicts above as they were; read them as leads",
            "for a study that declares them, not as findings of this one. Columns as above.",
            "",
            _verdict_table(extra_verdicts, extra_improvements),
            "",
            *_reference_lines(extra, extra_verdicts),
            _arms_table(extra),
            "",
        ]
    if study.previous:  # the earlier study's verdicts beside these (lightclf.study.report.previous)
        parts += changes_table(Previous.parse(study.previous), verdicts, out_dir)
    outcomes = [choose(Choice.parse(raw), runs) for raw in study.choices]
    if outcomes:
        parts += [
            "## Settings chosen on validation",
            "",
            "Each option's mean validation top-1 at fit end (held-out training images), over the seeds every",
            "option has; the highest is picked. Test top-1 is shown for the reader and played no part in the",
            "pick. A pick is reported, not applied: the verdicts above use the arms their questions name.",
            "",
            choice_table(outcomes),
            "",
        ]
        write_csv(out_dir / "choices.csv", choice_csv_rows(outcomes))
    parts += [
        *(["## Notes", "", notes.strip(), ""] if notes else []),
        # The planned arms' geometry, run or not: it shows before a study's first run finishes.
        *geometry_section([Factors.from_study({**spec.factors}) for spec in study.specs()]),
    ]
    parts += erf_section(rows, out_dir)
    parts += curves_section(rows, out_dir)
    parts += ["## Every configuration", "", _configuration_table(rows), ""]
    parts += _devices_section(runs)
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    per_run = [{**r.csv_row(), "label": r.factors.configuration.label} for r in runs]
    header = [key for key in dict.fromkeys(k for row in per_run for k in row) if key != "label"]
    write_csv(out_dir / "runs.csv", per_run, [*header, "label"] if per_run else None)  # label last, device or not
    families = [("declared", verdicts, improvements), ("exploratory", extra_verdicts, extra_improvements)]
    write_csv(
        out_dir / "verdicts.csv",
        [
            {"question": v.name, "family": family, "effect": v.effect.mean, "n": v.effect.n, "paired": v.effect.paired,
             "ci_low": v.effect.ci_low, "ci_high": v.effect.ci_high, "mde": v.mde, "p": v.p_value,
             "p_holm": v.p_holm, "tost_p": v.tost_p, "verdict": v.word,
             "p_improvement": better.p if better else None, "p_improvement_low": better.ci_low if better else None,
             "p_improvement_high": better.ci_high if better else None, "p_improvement_call": ("interim" if v.interim else better.call) if better else None}
            for family, judged, improved in families for v, better in zip(judged, improved)
        ],
    )  # fmt: skip
    return path
