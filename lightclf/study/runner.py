"""`python -m lightclf study`: run a grid of fits (width x resolution x dilation + extra runs).

A study is a base fit config plus factors. Every run is a separate `lightclf fit` process
with a deterministic W&B id, group = study name and tags naming its factors, so a killed
study resumes: finished runs are skipped, interrupted ones continue from ``last.ckpt``.
``--emit-sweep`` writes the equivalent W&B sweep (one point per run, grid and extra runs alike)
so the study can fan out with `wandb agent`.

Runs execute configuration by configuration, every seed of one configuration before the next,
so a study stopped part-way leaves complete seed sets of its first configurations (list the
most important first). A run entry may carry ``overrides`` (``lightclf fit`` keys) for that run
only, e.g. fewer images for an expensive baseline.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.runs import RunRecord
from lightclf.study.spec import FACTORS, RunSpec, Study, load_study

__all__ = ["Study", "RunSpec", "load_study", "run_status", "archive_run", "run_study", "select_point", "main"]


def run_status(study: Study, spec: RunSpec) -> str:
    """new / running / fit_done / finished / interrupted / failed (an archived finished run counts)."""
    return study.record(spec).status


def archive_run(study: Study, spec: RunSpec) -> None:
    """Copy a finished run's small records (never checkpoints) into the study's ``records`` folder."""
    if not study.records or not RunRecord.read(study.run_dir(spec)).finished:
        return
    target = Path(study.records) / spec.run_id
    target.mkdir(parents=True, exist_ok=True)
    for name in RunRecord.FILES:
        source = study.run_dir(spec) / name
        if source.exists():
            shutil.copyfile(source, target / name)


def run_study(
    study: Study,
    extra_args: list[str] | None = None,
    dry_run: bool = False,
    log=print,
    specs: list[RunSpec] | None = None,
) -> dict[str, str]:
    """Run every spec not yet finished; resume interrupted ones from their last checkpoint."""
    outcome = {}
    specs = study.specs() if specs is None else specs
    for index, spec in enumerate(specs, 1):
        status = run_status(study, spec)
        if status == "finished":
            if not dry_run:
                archive_run(study, spec)  # runs finished before the study had a records folder
            log(f"[{index}/{len(specs)}] {spec.name}: finished earlier, skipped")
            outcome[spec.run_id] = "skipped"
            continue
        args = spec.cli_args(study.base_config, study.save_dir, study.project) + list(extra_args or [])
        last = RunRecord(folder=study.run_dir(spec)).last_ckpt
        if last.exists():
            args += ["--ckpt_path", str(last)]
            log(f"[{index}/{len(specs)}] {spec.name}: resuming from {last}")
        else:
            log(f"[{index}/{len(specs)}] {spec.name}: starting ({spec.run_id})")
        if dry_run:
            log("  python -m lightclf " + shlex.join(args))  # copy-pastable into a shell
            outcome[spec.run_id] = "dry-run"
            continue
        RunRecord(folder=study.run_dir(spec)).write(RunRecord.STUDY, {"study": study.name, **spec.factors})
        command = [sys.executable, "-m", "lightclf", *args]
        result = subprocess.run(command, env=_run_env())
        if result.returncode not in (0, 2, 130, 143):
            # One retry after a pause for transient failures; config errors (2) and interrupts are final.
            time.sleep(10)
            if last.exists() and "--ckpt_path" not in command:
                command += ["--ckpt_path", str(last)]
            log(f"[{index}/{len(specs)}] {spec.name}: exit {result.returncode}, retrying once")
            result = subprocess.run(command, env=_run_env())
        outcome[spec.run_id] = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
        archive_run(study, spec)
        log(f"[{index}/{len(specs)}] {spec.name}: {outcome[spec.run_id]}")
    return outcome


def _run_env() -> dict[str, str]:
    """Environment of one run's process. WANDB_SERVICE is dropped: a W&B service inherited from the
    caller (set by any earlier wandb.init in it) would be shared by every run, and it refuses a
    run id it still holds ("run ID ... is in use"), which breaks resuming a run."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    return {**env, "PYTHONUNBUFFERED": "1"}


def sweep_config(study: Study, study_path: str) -> dict[str, Any]:
    """A W&B grid sweep with one point per run of the study (grid and extra runs, every seed):
    each agent call runs that one run through this runner (``--point run=<run id>``)."""
    return {
        "name": study.name,
        "program": "lightclf",
        "method": "grid",
        "metric": {"name": "test/acc1", "goal": "maximize"},
        "parameters": {"run": {"values": [spec.run_id for spec in study.specs()]}},
        "command": [
            "${env}",
            "${interpreter}",
            "-m",
            "lightclf",
            "study",
            "--config",
            study_path,
            "--point",
            "${args_no_hyphens}",
        ],
    }


def select_point(study: Study, items: list[str]) -> list[RunSpec]:
    """The runs that ``--point`` names: ``run=<run id>`` (what a sweep agent passes) or
    factor=value pairs (every run of the study matching all of them)."""
    wanted = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in (*FACTORS, "run"):
            raise ConfigError(
                f"study --point: expected run=<id> or factor=value with factor in {FACTORS}, got {item!r}"
            )
        wanted[key] = value if key == "run" else yaml.safe_load(value)
    chosen = [
        spec
        for spec in study.specs()
        if all((spec.run_id if key == "run" else spec.factors.get(key)) == value for key, value in wanted.items())
    ]
    if not chosen:
        raise ConfigError(f"study --point {' '.join(items)}: no run of study {study.name!r} matches")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = ToolArgumentParser(prog="lightclf study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="study YAML (configs/study/*.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--emit-sweep", metavar="PATH", help="write the W&B sweep config and exit")
    parser.add_argument("--point", nargs="+", metavar="FACTOR=VALUE", help="run one point (used by wandb agent)")
    parser.add_argument("--no-bench", action="store_true", help="skip the inference benchmark of the study's nets")
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: extra `lightclf fit` arguments for every run"
    )
    args = parser.parse_args(argv)
    study = load_study(args.config)
    extra = [a for a in args.extra if a != "--"]
    if args.emit_sweep:
        Path(args.emit_sweep).parent.mkdir(parents=True, exist_ok=True)
        Path(args.emit_sweep).write_text(yaml.safe_dump(sweep_config(study, args.config), sort_keys=False))
        print(f"wrote {args.emit_sweep}: `wandb sweep {args.emit_sweep}` then `wandb agent <sweep id>` on each machine")
        return
    specs = select_point(study, args.point) if args.point else study.specs()
    print(f"study {study.name}: {len(specs)} runs into {study.save_dir}/{study.project}", file=sys.stderr)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    outcome = run_study(study, extra, dry_run=args.dry_run, log=log, specs=specs)
    failed = [k for k, v in outcome.items() if v.startswith("failed")]
    if not args.dry_run and not args.no_bench and not args.point:
        from lightclf.study.report import bench_study

        bench_study(study)
    if failed:
        print(
            f"lightclf: error: {len(failed)} run(s) failed: {', '.join(failed)}; re-run the study to retry",
            file=sys.stderr,
        )
        sys.exit(1)
