"""Load a trained classifier, its preprocessing and its run folder from a lightclf checkpoint."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lightclf.data.preprocessing import Preprocessing
from lightclf.errors import ConfigError
from lightclf.runs import RunRecord
from lightclf.training.module import ImageClassifier

__all__ = ["LoadedRun", "read_checkpoint", "load_run", "datamodule_from_run"]


def read_checkpoint(path: str | Path, option: str) -> dict:
    """The checkpoint's dict, memory-mapped (tensors are not read); a missing or foreign file
    is a one-line ConfigError naming ``option``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option}: {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # a truncated or foreign file
        raise ConfigError(f"{option}: {path} is not a readable checkpoint ({type(err).__name__})") from None


@dataclass
class LoadedRun:
    """A trained classifier from a checkpoint with its preprocessing, class names and run folder."""

    module: ImageClassifier
    ckpt_path: Path
    preprocessing: Preprocessing
    class_names: list[str]
    run: RunRecord | None  # None when the checkpoint travelled without its run folder

    @property
    def resolution(self) -> int:
        return self.preprocessing.resolution

    @property
    def in_chans(self) -> int:
        return self.preprocessing.channels

    @property
    def run_dir(self) -> Path | None:
        return self.run.folder if self.run is not None else None


def load_run(ckpt_path: str | Path) -> LoadedRun:
    """The classifier (eval, CPU) and the preprocessing its checkpoint recorded."""
    path = Path(ckpt_path)
    raw = read_checkpoint(path, "--ckpt")
    try:
        module = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    except (RuntimeError, KeyError, EOFError, OSError, TypeError) as err:
        raise ConfigError(f"--ckpt: {path} is not a lightclf checkpoint ({type(err).__name__})") from None
    module.eval()
    meta = raw.get("lightclf") or {}
    hp = module.hparams
    names = meta.get("class_names") or [str(i) for i in range(hp.get("num_classes", 10))]
    if meta.get("preprocessing"):
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    else:  # checkpoints written before the preprocessing was stored whole
        preprocessing = Preprocessing(
            resolution=int(hp.get("img_size", 224)),
            mean=tuple(meta.get("mean") or [0.5]),
            std=tuple(meta.get("std") or [0.5]),
            channels=int(hp.get("in_chans", 3)),
            native_channels=int(meta.get("native_channels", 3)),
        )
    folder = RunRecord.of_checkpoint(path, meta.get("run_dir"))
    return LoadedRun(
        module=module,
        ckpt_path=path,
        preprocessing=preprocessing,
        class_names=list(names),
        run=RunRecord.read(folder) if folder.is_dir() else None,
    )


def datamodule_from_run(run: LoadedRun, **overrides):
    """Rebuild the run's data module from its saved config.yaml (for calibration and evaluation)."""
    if run.run is None or not run.run.config_path.exists():
        raise ConfigError(f"no config.yaml beside {run.ckpt_path}: cannot rebuild the data module")
    config = yaml.safe_load(run.run.config_path.read_text())
    data = config["data"]
    module_name, _, cls_name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**{**(data.get("init_args") or {}), **overrides})
