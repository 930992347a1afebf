"""`lightclf gpu-study`: one prepared command for a GPU box (minutes, not hours, of GPU time).

Runs a study with several fits per GPU at once (``--jobs-per-gpu``), stops cleanly at
``--minutes`` (no run starts that would not finish in time; runs still going at the limit save
``interrupted.ckpt`` and the next call resumes them exactly where they stopped; with ``order: seeds`` the first blocks keep complete
seed sets), then measures training img/s of the study's networks on the GPU (bf16-mixed and fp32,
channels_last and contiguous: ``bench-train --device cuda``), and writes the report, the per-run
CSV, the verdicts and the img/s table under ``reports/<study>/``.

``--smoke`` runs the same path on the CPU in a minute (two runs of a few steps, a one-round bench,
the report) into ``--out``, so the command cannot rot between GPU sessions (CI runs it).
``--prepare DIR`` gathers what the GPU box lacks into DIR (ignored by git, carried by the device
tool): the Fashion-MNIST files and wheels of the Python packages the box does not have.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.factors import Factors
from lightclf.study.execution import cpu_cores, plan_slots, visible_gpus
from lightclf.study.runner import ready_specs, run_study
from lightclf.study.spec import load_study

__all__ = ["main", "WHEELS"]

# What the GPU image lacks (its package list: /work/.library/device/KINDS.md), with the needs of each
# that it lacks too; fetched for its Python (3.12, manylinux x86-64).
WHEELS = (
    "jsonargparse", "docstring-parser", "typeshed-client", "importlib-resources",
    "wandb", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "sentry-sdk", "gitpython", "gitdb",
    "smmap", "platformdirs", "setproctitle", "submitit",
)  # fmt: skip
SMOKE_ARGS = [
    "--trainer.max_steps", "3", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2", "--data.init_args.train_subset", "512", "--trainer.accelerator", "cpu",
    "--trainer.precision", "32-true",
    # A path check, not a measurement: batches of 16 and a 4-image field probe (the default 256
    # images and 14 per-block probes of a width-1.0 net took most of a smoke fit's time; 32 still
    # cost 4x the fit's 3 training steps; batches of 32 and 8 probe images, 13 s of CPU a fit).
    "--data.init_args.batch_size", "16", "--trainer.callbacks+=lightclf.training.evaluation.ReceptiveFieldProbe",
    "--trainer.callbacks.images", "4",
]  # fmt: skip
REPORT_MARGIN_S = 90  # kept for the bench and the report after the fits


def prepare(target: Path, data: Path = Path("/usr/share/datasets/fashion-mnist")) -> None:
    """Gather what the GPU box lacks (Fashion-MNIST files, wheels) into ``out``."""
    target.mkdir(parents=True, exist_ok=True)
    if not data.is_dir():
        raise ConfigError(f"gpu-study --prepare: {data} not found: apt-get install dataset-fashion-mnist")
    shutil.copytree(data, target / "fashion-mnist", dirs_exist_ok=True)
    platforms = [arg for n in (28, 27, 17) for arg in ("--platform", f"manylinux_2_{n}_x86_64")]
    platforms += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", "--platform", "any"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(target / "wheels"), *WHEELS]  # fmt: skip
    subprocess.run(command, check=True)
    print(f"prepared {target}: carry it; on the box run `python3 -m pip install -q --no-index --no-deps "
          f"--target /tmp/site {target}/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD` first")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf gpu-study", description=__doc__.splitlines()[0].partition(": ")[2])
    parser.add_argument("--config", default="configs/study/fmnist_gpu.yaml", help="study YAML")
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock limit for fits, bench and report")
    parser.add_argument("--jobs-per-gpu", type=int, default=8, help="fits sharing one GPU at once (small nets)")
    parser.add_argument("--data-dir", help="Fashion-MNIST files, when the Debian package is not installed")
    parser.add_argument("--out", default="reports", help="reports root (the report goes to <out>/<study>/)")
    parser.add_argument("--smoke", action="store_true", help="the same path on the CPU in a minute (CI)")
    parser.add_argument("--no-bench", action="store_true", help="skip the GPU img/s table")
    parser.add_argument("--prepare", metavar="DIR", help="gather data and wheels for the box into DIR, then exit")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return
    if args.minutes <= 0 or args.jobs_per_gpu < 1:
        raise ConfigError("gpu-study: --minutes must be > 0 and --jobs-per-gpu >= 1")
    started = time.time()
    study = load_study(args.config)
    extra = ["--data.init_args.data_dir", args.data_dir] if args.data_dir else []
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.smoke:
        root = Path(args.out)
        study = replace(study, save_dir=str(root / "runs"), records=str(root / study.name / "records"))
        specs, extra, device = ready_specs(study, study.specs(), args.config)[:2], extra + SMOKE_ARGS, "cpu"
        slots = plan_slots(2, None, threads=1)
    else:
        gpus = visible_gpus(None)
        if not gpus:
            raise ConfigError("gpu-study: no CUDA GPU is visible here (use --smoke to check the path on a CPU)")
        specs, device = ready_specs(study, study.specs(), args.config), "cuda"
        jobs = args.jobs_per_gpu * len(gpus)
        slots = plan_slots(jobs, gpus, threads=max(1, cpu_cores() // jobs))  # no oversubscribed CPU threads
        log(f"gpu-study {study.name}: {len(specs)} runs, {len(slots)} at a time on GPU(s) {','.join(gpus)}")
    deadline = started + 60 * args.minutes - REPORT_MARGIN_S
    outcome = run_study(study, extra, log=log, specs=specs, slots=slots, deadline=deadline)
    log(f"fits: {sum(v == 'ok' for v in outcome.values())} ok, {sum(v == 'interrupted' for v in outcome.values())} "
        f"stopped at the limit, {sum(v.startswith('failed') for v in outcome.values())} failed")  # fmt: skip
    out_dir = Path(args.out) / study.name
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.no_bench:
        pass
    elif time.time() > deadline + REPORT_MARGIN_S / 2:
        log("gpu-study: no time left for the img/s table (run `lightclf bench-train --device cuda` later)")
    else:
        bench_specs = specs[:1] if args.smoke else specs  # the smoke checks the path: one net shows it
        _bench(study, bench_specs, device, out_dir, smoke=args.smoke, log=log)
    from lightclf.study.report.questions import write_question_report

    path = write_question_report(study, args.out)
    log(f"wrote {path} in {(time.time() - started) / 60:.1f} min")


def _bench(study, specs, device: str, out_dir: Path, smoke: bool, log) -> None:
    """Training img/s per network of the study on ``device``: bf16-mixed and fp32, both memory formats."""
    from lightclf.measure.bench_train import rows_of, run_train_bench, write_rows

    nets: dict[tuple[str, int], None] = {}
    for spec in specs:
        f = Factors.from_study(spec.factors)
        nets[(f.model_spec, f.resolution or 28)] = None  # the spec the study report's img/s join uses
    rows = []
    for spec, resolution in nets:
        # The smoke's batch of 2: bf16-mixed on a CPU without bf16 kernels (AVX2) ran 14 s of CPU at 8.
        cases = run_train_bench([spec], [resolution], ["contiguous", "channels_last"], ["32", "bf16-mixed"],
                                batch_size=2 if smoke else 128, rounds=1 if smoke else 3, steps=1 if smoke else 20,
                                warmup=1 if smoke else 5, log=log, device=device)  # fmt: skip
        rows += rows_of(cases)
    path = write_rows(rows, out_dir / "gpu_train_bench.csv")
    log(f"wrote {path} ({len(rows)} rows)")
