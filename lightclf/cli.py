"""`python -m lightclf`: LightningCLI for fit/validate/test/predict, plus the study tools."""

from __future__ import annotations

import errno
import importlib
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightclf.callbacks import RunConfigSaver
from lightclf.checkpoints import read_checkpoint
from lightclf.data import DataError, ImageDataModule
from lightclf.models import ConfigError
from lightclf.module import ImageClassifier
from lightclf.wandb_setup import configure_wandb

__all__ = ["LightclfCLI", "main"]

# Subcommands that are not Trainer entry points: name -> module with a ``main(argv)``.
TOOLS = {
    "bench": "lightclf.bench",
    "bench-compare": "lightclf.bench:compare_main",
    "bench-train": "lightclf.bench_train",
    "study": "lightclf.study",
    "report": "lightclf.report",
    "export": "lightclf.export",
}
USER_ERRORS = (ConfigError, DataError, FloatingPointError, FileNotFoundError)


# Lines of jsonargparse's error reports that repeat the obvious (union plumbing, the given value).
_GENERIC_ERROR_LINES = (
    "Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>",
    "Expected a path but",
)  # fmt: skip


def one_line_error(message: str) -> str:
    """jsonargparse's multi-line report as one line: the parser key and the specific reason.

    Also serves the keyless union report that jsonargparse wraps around an error raised while
    instantiating the data module: then the reason is the error's own message."""
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines()]
    lines = [line.replace('in "<unicode string>", ', "") for line in lines if line]
    if not lines:
        return message
    match = re.match(r'Parser key "([^"]+)":\s*(.*)$', lines[0])
    if not match and not lines[0].startswith(_GENERIC_ERROR_LINES):
        return " ".join(lines)
    details: list[str] = []
    for line in lines[1:] if match else lines:
        if not line.startswith(_GENERIC_ERROR_LINES) and line not in details:
            details.append(line)
    if not match:
        return " ".join(details) or lines[0]
    key, rest = match.groups()
    detail = " ".join(details) or rest
    given = next((line.partition(":")[2].strip() for line in lines if line.startswith("Given value:")), "")
    if given and "Got value" not in detail:
        detail += f" (given: {given})"
    return f"{key}: {detail}"


class OneLineErrorParser(LightningArgumentParser):
    """Config and command-line mistakes end in one line, not a page of usage and union plumbing."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG", "").lower() == "true":
            super().error(message, ex)  # raises: a parent parser reports it, or the user debugs
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"lightclf: error: {one_line_error(message)} (options: {prog} --help)", file=sys.stderr)
        sys.exit(2)


class LightclfCLI(LightningCLI):
    """Links data -> model so no number is typed twice; validates before any training starts."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.channels", "model.in_chans", apply_on="instantiate")
        parser.link_arguments("data.resolution", "model.img_size", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="after fit, test the best checkpoint in the same run"
        )

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        if config.get("test_after_fit") and not self.trainer.interrupted:
            has_best = bool(getattr(self.trainer.checkpoint_callback, "best_model_path", ""))
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)

    def _parse_ckpt_path(self) -> None:
        # Lightning replaces the model config by the checkpoint's hyperparameters; check first
        # that the checkpoint is readable and of the network the config asks for.
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, {}) if subcommand else {}
        ckpt_path = config.get("ckpt_path") if config else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            _check_checkpoint(config, ckpt_path, resume=subcommand == "fit")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        for item in logger if isinstance(logger, list) else [logger]:
            init_args = getattr(item, "init_args", None) or (item.get("init_args") if isinstance(item, dict) else None)
            save_dir = init_args.get("save_dir") if init_args else None
            if save_dir:
                Path(save_dir).mkdir(parents=True, exist_ok=True)  # wandb wants its dir to exist


def _check_checkpoint(config, ckpt_path: str, resume: bool) -> None:
    """Fail early on a checkpoint of another network; on resume, continue its W&B run."""
    ckpt = read_checkpoint(ckpt_path, "ckpt_path")
    saved = ckpt.get("hyper_parameters", {})
    model = config.get("model", {})
    for key in ("network", "network_kwargs"):
        want, have = model.get(key), saved.get(key)
        if key in saved and (want or None) != (have or None):
            raise ConfigError(
                f"ckpt_path: {ckpt_path} holds model.{key}={have!r} but the config asks for {want!r}; "
                "use the run's own config.yaml"
            )
    wandb_id = (ckpt.get("lightclf") or {}).get("wandb_id")
    logger = config.get("trainer", {}).get("logger")
    init_args = getattr(logger, "init_args", None)
    if resume and wandb_id and init_args is not None and "WandbLogger" in str(getattr(logger, "class_path", "")):
        if init_args.get("id") in (None, wandb_id):
            init_args["id"] = wandb_id  # same W&B run and run folder: no duplicate, history continues
            init_args["resume"] = "allow"


def run_cli(argv: list[str]) -> None:
    if not any(a in ("-h", "--help") or a.startswith("--print_config") for a in argv):  # no run starts
        configure_wandb()
    LightclfCLI(
        ImageClassifier,
        ImageDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineErrorParser,
        args=None if argv == sys.argv[1:] else argv,  # LightningCLI warns when both are given
        parser_kwargs={
            "prog": "lightclf",
            "description": "lightclf: train and compare lightweight image classifiers",
            "epilog": "More commands (each has --help): "
            + ", ".join(f"lightclf {name}" for name in TOOLS)
            + ", lightclf predict --ckpt CKPT --input IMAGES (photos and folders).",
        },
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    try:
        if argv and argv[0] == "predict" and any(a == "--input" or a.startswith("--input=") for a in argv):
            importlib.import_module("lightclf.predict").main(argv[1:])  # photos/folders, not a data module
        elif argv and argv[0] in TOOLS:
            module, _, func = TOOLS[argv[0]].partition(":")
            getattr(importlib.import_module(module), func or "main")(argv[1:])
        else:
            run_cli(argv)
    except USER_ERRORS as err:
        print(f"lightclf: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(
            f"lightclf: error: no space left on device ({err.filename or 'checkpoint'}); "
            "checkpoints written before are intact: free space and resume with --ckpt_path",
            file=sys.stderr,
        )
        sys.exit(2)
    except ValueError as err:
        # jsonargparse wraps errors raised while instantiating a subclass (the data module).
        if "Does not validate against any of the Union subtypes" not in str(err):
            raise
        print(f"lightclf: error: {one_line_error(str(err))}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, SIGTERMException) as err:
        # Lightning's SIGTERMException is a SystemExit(0): a killed job must not look successful.
        name = "SIGTERM" if isinstance(err, SIGTERMException) else "Ctrl-C"
        print(
            f"lightclf: interrupted by {name}; resume with --ckpt_path <run dir>/checkpoints/last.ckpt", file=sys.stderr
        )
        sys.exit(143 if name == "SIGTERM" else 130)
