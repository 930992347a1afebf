"""The run folder: one typed record of what a run leaves on disk, and the one function naming its path.

Every ``lightclf fit`` writes one folder, ``<save_dir>/<project>/<run id>`` (:func:`run_path`)::

    config.yaml       the resolved config (`lightclf fit --config` reruns it)
    complexity.json   params, MACs, size, receptive field (at fit start)
    results.json      status, epochs, metrics, best checkpoint, timings (as stages end)
    study.json        the study and factors, for runs a study started
    export.json       export and int8 figures (`lightclf export`)
    erf.json          effective receptive field of the tested weights (radii, heat map)
    checkpoints/      best, last.ckpt, interrupted.ckpt

:class:`RunRecord` reads and writes that contract; the callbacks, ``study``, ``report``,
``export`` and ``predict`` all go through it. No torch here: reading a study's records must stay cheap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "RunRecord",
    "ExportFigures",
    "ExportCheck",
    "Fp32Figures",
    "Int8Figures",
    "SavedPosition",
    "run_path",
    "write_json",
    "STATUSES",
]

# The life of a run, in order; "interrupted" and "failed" can follow any of the first three.
STATUSES = ("new", "running", "fit_done", "finished", "interrupted", "failed")


def run_path(save_dir: str | Path | None, project: str, run_id: str) -> Path:
    """The folder of run ``run_id``: ``<save_dir>/<project>/<run id>`` (W&B's layout, checkpoints included)."""
    return Path(save_dir or ".") / str(project) / str(run_id)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a run killed mid-write never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a foreign or damaged file reads as absent; the run is then "new"


# RunRecord fields that are not results.json keys: the folder and the other files' contents.
OTHER_FILES = {"folder", "complexity", "factors", "export", "erf"}


@dataclass(frozen=True)
class ExportCheck:
    """An exported file (ONNX or TorchScript) against PyTorch on the same images."""

    path: str
    size_mb: float
    max_abs_diff: float
    same_top1: float
    ms_per_image: float
    torch_ms_per_image: float | None = None


@dataclass(frozen=True)
class Fp32Figures:
    """The fp32 ONNX model in onnxruntime: the baseline int8 must beat."""

    top1: float
    size_mb: float
    file_mb: float
    ms_per_image: float
    eager_ms_per_image: float


@dataclass(frozen=True)
class Int8Figures:
    """onnxruntime static int8 post-training quantization of the same model."""

    top1: float
    file_mb: float
    ms_per_image: float
    speedup_vs_fp32_onnxruntime: float
    calibration_images: int
    method: str


@dataclass(frozen=True)
class ExportFigures:
    """``export.json``: what `lightclf export` measured for one checkpoint (typed; the JSON keeps
    the same keys)."""

    ckpt: str
    resolution: int | None = None
    checked_on: str = ""
    onnx: ExportCheck | None = None
    torchscript: ExportCheck | None = None
    fp32: Fp32Figures | None = None
    int8: Int8Figures | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFigures | None:
        if not data:
            return None
        parts = {"onnx": ExportCheck, "torchscript": ExportCheck, "fp32": Fp32Figures, "int8": Int8Figures}
        return cls(
            ckpt=data.get("ckpt", ""),
            resolution=data.get("resolution"),
            checked_on=data.get("checked_on", ""),
            **{k: kind(**data[k]) for k, kind in parts.items() if data.get(k)},
        )

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SavedPosition:
    """Where a fit was when it last saved a checkpoint: ``batches_done`` of the ``epoch_batches`` of
    ``epoch`` (0-based) trained, ``global_step`` optimizer steps in all, at ``saved_at`` (epoch
    seconds, taken before the write). A timed ``last.ckpt`` or a stop's ``interrupted.ckpt`` lies
    inside an epoch. ``epoch_batches`` is None for a set of unknown length."""

    epoch: int
    batches_done: int
    epoch_batches: int | None
    global_step: int
    saved_at: float

    def describes(self, ckpt: Path) -> bool:
        """Whether ``ckpt`` is the file this save wrote: written after it began. A save that failed (a
        full disk) leaves the earlier file, which is older."""
        return ckpt.is_file() and ckpt.stat().st_mtime >= self.saved_at


@dataclass
class RunRecord:
    """Everything a run folder holds except checkpoints and config (which have their own readers)."""

    folder: Path
    # results.json
    status: str = "new"
    network: str | None = None
    started: float | None = None
    epoch: int | None = None
    max_epochs: int | None = None
    global_step: int | None = None
    last: dict[str, float] = field(default_factory=dict)
    fit_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    test_per_epoch: list[dict[str, float]] = field(default_factory=list)
    val_per_epoch: list[dict[str, float]] = field(default_factory=list)  # {"epoch", "val/acc1", ...}
    best_ckpt: str = ""
    fit_seconds: float | None = None
    device: str | None = None  # what trained it (measure.device.device_label): reports pool devices
    error: str | None = None
    saved_position: dict[str, float | None] = field(default_factory=dict)  # SavedPosition of the newest save
    # the other files
    complexity: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)  # study.json: the study and its factors
    export: dict[str, Any] = field(default_factory=dict)
    erf: dict[str, Any] = field(default_factory=dict)

    @property
    def export_figures(self) -> ExportFigures | None:
        return ExportFigures.from_json(self.export)

    @property
    def saved(self) -> SavedPosition | None:
        """Where the fit was at its newest checkpoint save (none recorded: None)."""
        try:
            return SavedPosition(**self.saved_position) if self.saved_position else None
        except TypeError:  # a record from another version of this file
            return None

    RESULTS = "results.json"
    COMPLEXITY = "complexity.json"
    STUDY = "study.json"
    EXPORT = "export.json"
    ERF = "erf.json"
    CONFIG = "config.yaml"
    FILES = (RESULTS, COMPLEXITY, STUDY, EXPORT, ERF)  # the small files a study archives with its report

    @classmethod
    def read(cls, folder: str | Path) -> RunRecord:
        folder = Path(folder)
        results = _read_json(folder / cls.RESULTS)
        known = {f.name for f in fields(cls)} - OTHER_FILES
        return cls(
            folder=folder,
            **{k: v for k, v in results.items() if k in known},
            complexity=_read_json(folder / cls.COMPLEXITY),
            factors=_read_json(folder / cls.STUDY),
            export=_read_json(folder / cls.EXPORT),
            erf=_read_json(folder / cls.ERF),
        )

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path, recorded: str | None = None) -> Path:
        """The run folder of a checkpoint: the folder holding ``checkpoints/`` (wherever the run was
        moved, whatever the working directory), else the folder recorded in it at save time."""
        beside = Path(ckpt).resolve().parent.parent
        if (beside / cls.CONFIG).exists() or (beside / cls.RESULTS).exists() or not recorded:
            return beside
        return Path(recorded).resolve()

    # -- paths -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.folder / self.CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def resume_ckpt(self) -> Path:
        """The checkpoint an unfinished run resumes from: the newer of ``last.ckpt`` (an epoch's end or
        a timed save inside one) and ``interrupted.ckpt`` (where a SIGTERM or Ctrl-C stopped it);
        resuming mid-epoch is exact. ``last.ckpt``, which may not exist, when there is neither."""
        saved = [p for p in (self.checkpoints / "interrupted.ckpt", self.last_ckpt) if p.exists()]
        return max(saved, key=lambda p: p.stat().st_mtime_ns, default=self.last_ckpt)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    # -- writing ---------------------------------------------------------------------------------
    def update(self, **results: Any) -> RunRecord:
        """Set fields of results.json and write it; other keys already in the file are kept."""
        known = {f.name for f in fields(self)} - OTHER_FILES
        unknown = set(results) - known
        if unknown:
            raise TypeError(f"RunRecord has no results fields {sorted(unknown)}")
        for key, value in results.items():
            setattr(self, key, value)
        path = self.folder / self.RESULTS
        write_json(path, {**_read_json(path), **results})
        return self

    def write(self, name: str, data: dict[str, Any]) -> None:
        """Write one of the other files (complexity, study, export) and keep it on the record."""
        attribute = {self.COMPLEXITY: "complexity", self.STUDY: "factors", self.EXPORT: "export", self.ERF: "erf"}[name]
        setattr(self, attribute, dict(data))
        write_json(self.folder / name, data)
