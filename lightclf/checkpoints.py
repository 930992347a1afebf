"""Load a trained classifier and its preprocessing from a lightclf checkpoint."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lightclf.models import ConfigError
from lightclf.module import ImageClassifier

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
    module: ImageClassifier
    ckpt_path: Path
    resolution: int
    in_chans: int
    class_names: list[str]
    mean: list[float]
    std: list[float]
    native_channels: int
    run_dir: Path | None


def load_run(ckpt_path: str | Path) -> LoadedRun:
    """The classifier (eval, CPU) and the preprocessing facts its checkpoint recorded."""
    path = Path(ckpt_path)
    raw = read_checkpoint(path, "--ckpt")
    try:
        module = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    except (RuntimeError, KeyError, EOFError, OSError, TypeError) as err:
        raise ConfigError(f"--ckpt: {path} is not a lightclf checkpoint ({type(err).__name__})") from None
    module.eval()
    meta = raw.get("lightclf") or {}
    hp = module.hparams
    num_classes = hp.get("num_classes", 10)
    names = meta.get("class_names") or [str(i) for i in range(num_classes)]
    run_dir = _run_dir_of(path, meta.get("run_dir"))
    return LoadedRun(
        module=module,
        ckpt_path=path,
        resolution=int(hp.get("img_size", 224)),
        in_chans=int(hp.get("in_chans", 3)),
        class_names=list(names),
        mean=list(meta.get("mean") or [0.5]),
        std=list(meta.get("std") or [0.5]),
        native_channels=int(meta.get("native_channels", 3)),
        run_dir=run_dir if run_dir.is_dir() else None,
    )


def _run_dir_of(ckpt: Path, recorded: str | None) -> Path:
    """The run folder of a checkpoint: the folder holding ``checkpoints/`` (wherever the run was
    moved or whatever the working directory is), else the folder recorded at save time."""
    beside = ckpt.resolve().parent.parent
    if (beside / "config.yaml").exists() or (beside / "results.json").exists() or not recorded:
        return beside
    return Path(recorded).resolve()


def datamodule_from_run(run: LoadedRun, **overrides):
    """Rebuild the run's data module from its saved config.yaml (for calibration and evaluation)."""
    if run.run_dir is None or not (run.run_dir / "config.yaml").exists():
        raise ConfigError(f"no config.yaml beside {run.ckpt_path}: cannot rebuild the data module")
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    data = config["data"]
    module_name, _, cls_name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**{**(data.get("init_args") or {}), **overrides})
