"""`python -m lightclf report`: turn a study's runs into tables and plots under reports/<study>/."""

from __future__ import annotations

from pathlib import Path

from lightclf.cli_args import ToolArgumentParser
from lightclf.study.report.collect import collect_runs, collect_wandb_runs
from lightclf.study.report.markdown import write_report
from lightclf.study.report.throughput import bench_study
from lightclf.study.report.wandb_summary import log_summary_run

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf report", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study YAML (its name, save_dir and project are used)")
    parser.add_argument(
        "--out",
        help="reports root: the report goes to <out>/<study name>/ (default: the study's report_dir, else reports/<study name>/)",
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read finished runs from the W&B API")
    parser.add_argument("--notes", metavar="FILE", help="markdown to put under the title (setup, caveats)")
    parser.add_argument("--bench", action="store_true", help="(re)measure inference img/s before writing")
    parser.add_argument(
        "--wandb-report",
        metavar="ENTITY/PROJECT",
        help="build a W&B Report of the study: saved online (URL printed), else its spec to <out>/<study>/wandb_report.json",
    )
    parser.add_argument(
        "--wandb-summary", action="store_true", help="log a summary run (tables + plots) into the study's W&B group"
    )
    args = parser.parse_args(argv)
    from lightclf.study.spec import load_study

    study = load_study(args.study)
    runs = collect_runs(study.save_dir, study.project, study.name, study.records)
    if args.wandb:
        local = {r.run_id for r in runs}
        runs += [r for r in collect_wandb_runs(args.wandb, study.name) if r.run_id not in local]
    if args.bench:
        bench_study(study, args.out or "reports")
    notes = Path(args.notes).read_text() if args.notes else ""
    out = Path(args.out) / study.name if args.out else study.report_folder
    if (
        study.questions or study.exploratory
    ):  # a study that asks its questions: verdicts, geometry and ERF (lightclf.study.report.questions)
        from lightclf.study.report.questions import write_question_report

        path = write_question_report(study, args.out, notes)
    else:
        from lightclf.study.report.tuning import tuning_section

        path = write_report(
            study.name,
            runs,
            out,
            notes,
            study.protocol,
            tuning_section(study, out),
            study.superseded_by,
            study.report_plan,
            len(study.specs()),
        )
    print(f"wrote {path} ({len(runs)} runs)")
    if args.wandb_report or args.wandb_summary:
        from lightclf.training.wandb_env import configure_wandb

        online = configure_wandb() == "online"
    if args.wandb_report:
        from lightclf.study.report.wandb_report import publish

        where = publish(study, args.wandb_report, out, online)
        if online:
            print(f"W&B report: {where}")
        else:
            print(
                f"W&B is offline: wrote the report spec to {where}; once logged in (`wandb login`), run "
                f"`lightclf report --study {args.study} --wandb-report {args.wandb_report}` again to publish it"
            )
    if args.wandb_summary:
        run_dir = log_summary_run(study, runs, out)
        print(f"W&B summary run: {run_dir}" + ("" if online else " (offline: upload with `wandb sync` on it)"))
