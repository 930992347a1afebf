"""`python -m lightclf report`: a study's runs as tables, statistics and plots under reports/<study>/.

One job per module: ``collect`` (the typed rows: ``RunRow`` per finished run from folders, records
or W&B, ``ConfigurationRow`` per configuration with its seeds merged),
``comparisons`` (every comparison, once: one ``Comparison`` type and one pairing rule for the knobs'
effects, the baselines and the questions), ``markdown`` (tables, verdicts,
report.md and its CSVs), ``plots``, ``throughput`` (the study's inference benchmark),
``wandb_summary`` (a summary run) and ``cli``. A study that declares questions gets the question
report (``lightclf.study.report.questions``) instead of the configuration report.
"""

from lightclf.study.report.cli import main
from lightclf.study.report.collect import ConfigurationRow, RunRow, aggregate, collect_runs, collect_wandb_runs
from lightclf.study.report.comparisons import Comparison, compare, compare_configurations, factor_effect
from lightclf.study.report.markdown import write_report
from lightclf.study.report.plots import pareto_front
from lightclf.study.report.throughput import bench_study
from lightclf.study.report.wandb_summary import log_summary_run

__all__ = ["Comparison", "ConfigurationRow", "RunRow", "aggregate", "bench_study", "collect_runs", "collect_wandb_runs",
           "compare", "compare_configurations", "factor_effect", "log_summary_run", "main", "pareto_front",
           "write_report"]  # fmt: skip
