"""A W&B comparison report of a study, built with wandb-workspaces (``wandb_workspaces.reports.v2``).

Online (an API key and no offline mode) the report is saved to W&B and its URL printed; offline
its spec is serialised to ``reports/<study>/wandb_report.json``, to publish later with
``lightclf report --study ... --wandb-report ENTITY/PROJECT`` once online.

Panels read what every lightclf fit logs: summary ``test/acc1``, ``params``, ``macs``,
``train/device/samples_per_sec`` (TrainThroughput) and config ``factors.*`` (RunRecorder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightclf.errors import ConfigError
from lightclf.library_hooks import offline_report_spec

__all__ = ["build_report", "report_spec", "publish"]

FACTOR_COLUMNS = ("width_multiplier", "resolution", "dilation", "separable")


def _split(path: str) -> tuple[str, str]:
    entity, sep, project = path.partition("/")
    if not sep or not entity or not project or "/" in project:
        raise ConfigError(f"--wandb-report: expected ENTITY/PROJECT, got {path!r}")
    return entity, project


def build_report(study, entity_project: str, protocol_md: str = ""):
    """The report object: protocol text, a runset of the study's group, and the comparison panels."""
    import wandb_workspaces.reports.v2 as wr

    entity, project = _split(entity_project)
    top1 = wr.SummaryMetric("test/acc1")
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=study.name,
        filters=f"Metric('Group') == '{study.name}'",
        groupby=["config.factors.config"],  # one row per configuration, its seeds inside
    )

    def scatter(x: str, title: str, log_x: bool = True):
        return wr.ScatterPlot(title=title, x=wr.SummaryMetric(x), y=top1, log_x=log_x)

    panels = [
        scatter("params", "test top-1 vs parameters"),
        scatter("macs", "test top-1 vs forward MACs / image"),
        scatter("train/device/samples_per_sec", "test top-1 vs training img/s (CPU)"),
        wr.ParallelCoordinatesPlot(
            title="width, resolution, dilation, separable -> test top-1",
            columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(f"factors.{c}")) for c in FACTOR_COLUMNS]
            + [wr.ParallelCoordinatesPlotColumn(metric=top1)],
        ),
        wr.BarPlot(
            title="test top-1 per configuration (mean, std over seeds)",
            metrics=[top1],
            groupby=wr.Config("factors.config"),
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
            orientation="h",
        ),
        wr.LinePlot(
            title="validation top-1 per epoch, by network (mean, std over runs)",
            x="epoch",
            y=["val/acc1"],
            groupby=wr.Config("factors.network"),
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        ),
        wr.RunComparer(diff_only="split"),
    ]
    blocks = [
        wr.H1(f"lightclf study: {study.name}"),
        wr.P(study.protocol.strip() or "Protocol: see the study YAML."),
    ]
    if protocol_md:
        blocks.append(wr.MarkdownBlock(protocol_md))
    blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    blocks += _tuning_blocks(wr, study, entity, project)
    return wr.Report(
        project=project,
        entity=entity,
        title=f"{study.name}: accuracy and cost of "
        + (f"{versus.name} vs baselines" if (versus := study.report_plan.versus) else "every configuration"),
        description="Built by `lightclf report --wandb-report`: every configuration with its seeds.",
        blocks=blocks,
    )


def _tuning_blocks(wr, study, entity: str, project: str) -> list:
    """The tuning table (as the markdown report has it) and the tuning fits' panels: every trial's fit
    is a W&B run in the group ``<study>-tune``, its settings under ``lightclf_config``."""
    tune = study.tuning
    if tune is None:
        return []
    from lightclf.study.report.tuning import tuning_section

    table = [line for line in tuning_section(study, Path(study.report_folder)) if not line.startswith("![")]
    val = wr.SummaryMetric("val/acc1")
    keys = [wr.Config(f"lightclf_config.{p.key}") for p in tune.space]
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=f"{study.name}-tune",
        filters=f"Metric('Group') == '{study.name}-tune'",
        groupby=["config.factors.config"],
    )
    panels = [
        wr.ParallelCoordinatesPlot(
            title="tuned settings -> validation top-1 (every trial fit)",
            columns=[wr.ParallelCoordinatesPlotColumn(metric=k) for k in keys]
            + [wr.ParallelCoordinatesPlotColumn(metric=val)],
        ),
        *(
            wr.ScatterPlot(title=f"validation top-1 vs {p.key}", x=k, y=val, log_x=p.log)
            for p, k in zip(tune.space, keys)
        ),
    ]
    return [wr.MarkdownBlock("\n".join(table)), wr.PanelGrid(runsets=[runset], panels=panels)]


def report_spec(report) -> dict[str, Any]:
    """The report as JSON (what W&B stores), without contacting W&B."""
    return offline_report_spec(report)


def publish(study, entity_project: str, out_dir: Path, online: bool, protocol_md: str = "") -> str:
    """Save online and return the URL; offline, write the spec and return its path."""
    report = build_report(study, entity_project, protocol_md)
    if online:
        report.save()
        return report.url
    path = Path(out_dir) / "wandb_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_spec(report), indent=1, sort_keys=True))
    return str(path)
