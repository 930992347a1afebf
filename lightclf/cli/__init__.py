"""`python -m lightclf <command>`: the Trainer commands (LightningCLI) and the tools, as plain functions.

Only the command that runs is imported: ``study --dry-run`` and ``report`` never load torch.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import sys
from collections.abc import Callable

from lightclf.errors import USER_ERRORS, ConfigError, exit_with_error
from lightclf.host_allocator import tune_host_allocator

__all__ = ["COMMANDS", "main"]


def bench(argv: list[str]) -> None:
    """`lightclf bench`: inference img/s and latency, models interleaved."""
    from lightclf.measure.bench_cli import main as bench_main

    bench_main(argv)


def bench_compare(argv: list[str]) -> None:
    """`lightclf bench-compare`: throughput ratios (our nets vs timm's, dilated vs undilated)."""
    from lightclf.measure.bench_cli import compare_main

    compare_main(argv)


def bench_train(argv: list[str]) -> None:
    """`lightclf bench-train`: training img/s, interleaved, with the fit-vs-bare-loop overhead."""
    from lightclf.measure.bench_train import main as bench_train_main
    from lightclf.training.overhead import fit_overhead

    bench_train_main(argv, fit_overhead=fit_overhead)


def study(argv: list[str]) -> None:
    """`lightclf study`: run a study's fits (resumable; --jobs, SLURM, sweeps)."""
    from lightclf.study.runner import main as study_main

    study_main(argv)


def tune(argv: list[str]) -> None:
    """`lightclf tune`: tune every arm of a study with the same Optuna search on validation."""
    from lightclf.study.tuning.cli import main as tune_main

    tune_main(argv)


def bench_tune(argv: list[str]) -> None:
    """`lightclf bench-tune`: the tuner against a full grid of the same space."""
    from lightclf.study.tuning.bench import main as bench_tune_main

    bench_tune_main(argv)


def gpu_study(argv: list[str]) -> None:
    """`lightclf gpu-study`: the prepared converged study on a GPU box (or --smoke on a CPU)."""
    from lightclf.study.gpu import main as gpu_main

    gpu_main(argv)


def report(argv: list[str]) -> None:
    """`lightclf report`: a study's report (tables, verdicts, plots, W&B)."""
    from lightclf.study.report import main as report_main

    report_main(argv)


def export(argv: list[str]) -> None:
    """`lightclf export`: ONNX, TorchScript and int8 from a checkpoint, each checked and timed."""
    from lightclf.deploy.export import main as export_main

    export_main(argv)


def erf(argv: list[str]) -> None:
    """`lightclf erf`: the effective receptive field of a checkpoint."""
    from lightclf.deploy.receptive_field import main as erf_main

    erf_main(argv)


def predict_images(argv: list[str]) -> None:
    """`lightclf predict --input`: top-k classes for photos and folders."""
    from lightclf.deploy.predict import main as predict_main

    predict_main(argv)


def trainer(argv: list[str]) -> None:
    """fit / validate / test / predict (on a data module) through LightningCLI."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lightclf.cli.lightning_cli import run_cli
    from lightclf.training.run_folder import INTERRUPTED_BY, RESUME_FROM

    INTERRUPTED_BY.clear()  # this command's own stop only (tests run several in one process)
    RESUME_FROM.clear()
    completed = False
    try:
        run_cli(argv, commands=list(COMMANDS))
        completed = True
    except SIGTERMException:
        # Lightning's SIGTERMException is a SystemExit(0): a stopped job must not look successful.
        # GracefulStop raises it for a first Ctrl-C too (stopping at a batch's end).
        _interrupted(*(("Ctrl-C", 130) if INTERRUPTED_BY else ("SIGTERM", 143)))
    except SystemExit:
        if INTERRUPTED_BY:  # Lightning handled a Ctrl-C inside the fit and exits 1: 130 and the resume line
            _interrupted(INTERRUPTED_BY[0], 130)
        raise
    except ValueError as err:
        # jsonargparse wraps errors raised while instantiating a subclass (the data module).
        if "Does not validate against any of the Union subtypes" not in str(err):
            raise
        from lightclf.cli.lightning_cli import one_line_error

        _fail(one_line_error(str(err)))
    finally:
        _finish_wandb_run(completed)


def _finish_wandb_run(completed: bool) -> None:
    """End the W&B run this command started. At process exit W&B does it itself, but a second fit
    in the same process (a notebook, a script calling ``main`` twice) would otherwise log into the
    first one's run: Lightning's WandbLogger adopts a run still in progress, its id and so its run
    folder too."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        with contextlib.suppress(Exception):  # never instead of the command's own exit and line
            wandb.finish(exit_code=0 if completed else 1)


# LightningCLI's subcommands (lightclf.cli.lightning_cli), and the tool commands beside them.
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
# The tool commands; the Trainer commands and options go to LightningCLI.
COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "bench": bench,
    "bench-compare": bench_compare,
    "bench-train": bench_train,
    "study": study,
    "tune": tune,
    "bench-tune": bench_tune,
    "gpu-study": gpu_study,
    "report": report,
    "export": export,
    "erf": erf,
}


# Tools that pick up where a stopped call left off when run again.
RESUMING_TOOLS = ("study", "tune", "gpu-study", "bench-tune")


# Modules an optional extra brings, by the name Python imports: a command that needs one says which
# extra to install in one line, whichever file imports it.
EXTRAS = {
    "scipy": "study", "statsmodels": "study", "matplotlib": "study", "optuna": "study", "submitit": "study",
    "wandb_workspaces": "report", "onnx": "export", "onnxruntime": "export", "sklearn": "dev",
}  # fmt: skip


def _fail(message: str) -> None:
    exit_with_error(message)


def _interrupted(name: str, code: int, command: str | None = None) -> None:
    """One line, from rank 0 only, naming what resumes the work: the checkpoint this fit left (the
    file that exists), or, for the tools that resume themselves (study, tune), the same command."""
    if "lightning" in sys.modules:
        from lightning.pytorch.utilities import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) != 0:
            sys.exit(code)
    if command in RESUMING_TOOLS:
        hint = f"; run `lightclf {command} ...` again to resume"
    elif command in COMMANDS:
        hint = ""
    elif "lightclf.training.run_folder" in sys.modules:
        from lightclf.training.run_folder import RESUME_FROM

        hint = f"; resume with --ckpt_path {RESUME_FROM[0]}" if RESUME_FROM else "; no checkpoint was written yet"
    else:
        hint = "; no checkpoint was written yet"
    print(f"lightclf: interrupted by {name}{hint}", file=sys.stderr)
    sys.exit(code)


def _command(argv: list[str]) -> Callable[[list[str]], None]:
    if argv and argv[0] == "predict" and any(a == "--input" or a.startswith("--input=") for a in argv):
        return lambda args: predict_images(args[1:])  # photos and folders, not a data module
    if argv and argv[0] in COMMANDS:
        return lambda args: COMMANDS[args[0]](args[1:])
    if argv and not argv[0].startswith("-") and argv[0] not in TRAINER_COMMANDS:
        # Said here, before LightningCLI loads torch and Lightning (10 s of CPU to print one line
        # that listed only the four Trainer commands).
        known = [*TRAINER_COMMANDS, *COMMANDS]
        close = difflib.get_close_matches(argv[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown command {argv[0]!r}{hint} (commands: {', '.join(known)}; lightclf --help)")
    return trainer


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    tune_host_allocator()  # before the first tensor: CPU steps otherwise re-fault their activations
    try:
        _command(argv)(argv)
    except USER_ERRORS as err:
        _fail(str(err))
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        what = argv[0] if argv else "lightclf"
        _fail(
            f"`lightclf {what}` needs {top}, which lightclf's [{EXTRAS[top]}] extra installs: pip install 'lightclf[{EXTRAS[top]}]'"
        )
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        _fail(
            f"no space left on device ({err.filename or 'checkpoint'}); "
            "checkpoints written before are intact: free space and resume with --ckpt_path"
        )
    except KeyboardInterrupt:
        _interrupted("Ctrl-C", 130, argv[0] if argv else None)
