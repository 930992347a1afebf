"""`lightclf fit/validate/test/predict`: LightningCLI with linked arguments, one-line errors and
complete run folders (the callbacks that write them are added here, whatever the config lists)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightclf.data import ImageDataModule
from lightclf.errors import ConfigError, exit_with_error
from lightclf.library_hooks import JSONARGPARSE_KEY_LINE
from lightclf.training.checkpoints import read_checkpoint
from lightclf.training.evaluation import ReceptiveFieldProbe
from lightclf.training.module import ImageClassifier
from lightclf.training.resume import GracefulStop, LastCheckpoint, RandomStates
from lightclf.training.run_folder import RunConfigSaver, RunRecorder
from lightclf.training.wandb_env import configure_wandb

__all__ = ["LightclfCLI", "OneLineErrorParser", "one_line_error", "run_cli"]


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
    match = JSONARGPARSE_KEY_LINE.match(lines[0])
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
        line = one_line_error(message)
        if line.startswith("Problems parsing config") and CONFIG_FILES:  # jsonargparse does not say which file
            line = f"--config {' / '.join(CONFIG_FILES)}: {line}"
        exit_with_error(f"{line} (options: {prog} --help)")


class LightclfCLI(LightningCLI):
    """Links data -> model so no number is typed twice; validates before any training starts.

    ``only``: the subcommand the command line names, whose parser alone is built (LightningCLI
    builds fit, validate, test and predict every time: three quarters of the parser's start-up, about
    0.5 s of every run); None builds all four (``lightclf --help``, options before the subcommand)."""

    def __init__(self, *args: Any, only: str | None = None, **kwargs: Any) -> None:
        self.only = only
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        every = LightningCLI.subcommands()
        return {self.only: every[self.only]} if self.only in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.channels", "model.in_chans", apply_on="instantiate")
        parser.link_arguments("data.resolution", "model.img_size", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="after fit, test the best checkpoint in the same run"
        )
        parser.add_argument(
            "--validation_only",
            type=bool,
            default=False,
            help="never read the test split (tuning fits): no test after fit, and anything asking for it fails",
        )

    def before_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("validation_only"):
            self.datamodule.lock_test_split()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # The run folder's writers: a config that leaves them out still yields a complete folder.
        for kind in (RunRecorder, LastCheckpoint, RandomStates, ReceptiveFieldProbe, GracefulStop):
            if not any(type(callback) is kind for callback in trainer.callbacks):
                trainer.callbacks.append(kind())
        return trainer

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        if config.get("test_after_fit") and not config.get("validation_only") and not self.trainer.interrupted:
            has_best = bool(getattr(self.trainer.checkpoint_callback, "best_model_path", ""))
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Next Lightning replaces the model config by the checkpoint's hyperparameters; check first
        # that the checkpoint is readable and of the network the config asks for.
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, {}) if subcommand else {}
        ckpt_path = config.get("ckpt_path") if config else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            _check_checkpoint(config, ckpt_path, resume=subcommand == "fit")

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
    # Under a W&B sweep agent the agent owns the run id: a retried point logs to the agent's new run.
    if "WANDB_SWEEP_ID" in os.environ:
        return
    if resume and wandb_id and init_args is not None and "WandbLogger" in str(getattr(logger, "class_path", "")):
        if init_args.get("id") in (None, wandb_id):
            init_args["id"] = wandb_id  # same W&B run and run folder: no duplicate, history continues
            init_args["resume"] = "allow"


# The --config files of the command line being parsed, for an error that cannot name its file.
CONFIG_FILES: list[str] = []


def run_cli(argv: list[str], commands: list[str] = ()) -> None:
    """``lightclf fit|validate|test|predict ...``; ``commands`` are the other commands, for --help."""
    CONFIG_FILES[:] = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    if not any(a in ("-h", "--help") or a.startswith("--print_config") for a in argv):  # no run starts
        configure_wandb()
    LightclfCLI(
        ImageClassifier,
        ImageDataModule,
        only=argv[0] if argv else None,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineErrorParser,
        args=None if argv == sys.argv[1:] else argv,  # LightningCLI warns when both are given
        parser_kwargs={
            "prog": "lightclf",
            "description": "lightclf: train and compare lightweight image classifiers",
            "epilog": "More commands (each has --help): "
            + ", ".join(f"lightclf {name}" for name in commands)
            + ", lightclf predict --ckpt CKPT --input IMAGES (photos and folders).",
        },
    )
