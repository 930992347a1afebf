"""Studies: a YAML of runs (spec), the runner that fits them, the report (statistics, plots, W&B)."""

from lightclf.study.spec import RunSpec, Study, load_study

__all__ = ["RunSpec", "Study", "load_study"]
