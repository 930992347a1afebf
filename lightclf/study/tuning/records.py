"""The committed record of a study's tuning: ``tuning.csv`` (one row per trial) and ``picks.yaml``
(each finished arm's pick), in the study's report folder. The report and the study's fits read these
files, never the Optuna storage, so a machine without the journal rebuilds the report and reruns the
study with the same picks."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightclf.study.tuning.space import TuneSpec
from lightclf.tables import write_csv

__all__ = ["TrialRow", "Pick", "write_records", "read_trials", "read_picks", "BASE_FIELDS"]

# Per-trial record keys (Optuna user attributes), written by the tuner.
RUNNER, ROOT, SEED_VALUES, FIT_SECONDS = "runner", "retry_of", "seed_values", "fit_seconds"
ERROR, DIVERGED = "error", "diverged"

BASE_FIELDS = ("arm", "arm_key", "trial", "state", "value", "seed_values", "epochs", "fit_seconds", "note")


@dataclass(frozen=True)
class TrialRow:
    """One trial of one arm, as ``tuning.csv`` holds it (value: mean validation top-1 over the seeds)."""

    arm: str
    arm_key: str
    trial: int
    state: str  # COMPLETE / PRUNED / FAIL / RUNNING / WAITING
    value: float | None
    seed_values: tuple[float | None, ...]
    epochs: int  # epochs reported to the pruner (every seed had reached them)
    fit_seconds: float | None
    params: dict[str, Any]
    note: str = ""  # "diverged" (scored 0, never picked), a fit's error, or "stopped, re-queued"


@dataclass(frozen=True)
class Pick:
    """An arm's picked settings: its best complete trial's, once all its trials are done."""

    arm: str
    arm_key: str
    params: dict[str, Any]
    value: float
    trial: int
    complete: int
    pruned: int


def trial_rows(storage, arms) -> list[TrialRow]:
    """Every trial of every arm, from the Optuna storage."""
    import optuna

    rows = []
    for arm in arms:
        try:
            ostudy = optuna.load_study(study_name=arm.optuna_name, storage=storage)
        except KeyError:  # no trial asked for this arm yet
            continue
        for t in ostudy.get_trials(deepcopy=False):
            rows.append(
                TrialRow(
                    arm=arm.label,
                    arm_key=arm.key,
                    trial=t.number,
                    state=t.state.name,
                    # Optuna gives a pruned trial its last intermediate value: never a result here.
                    value=t.value if t.state.name == "COMPLETE" else None,
                    seed_values=tuple(t.user_attrs.get(SEED_VALUES) or ()),
                    epochs=len(t.intermediate_values),
                    fit_seconds=t.user_attrs.get(FIT_SECONDS),
                    params=dict(t.params),
                    note=_note(t),
                )
            )
    return rows


def _note(trial) -> str:
    if trial.user_attrs.get(DIVERGED):
        return "diverged"
    if trial.user_attrs.get(ERROR):
        return str(trial.user_attrs[ERROR])
    if trial.state.name == "FAIL":
        return "stopped, re-queued"  # its runner stopped or died; the retry is a later trial
    return ""


def picks_of(rows: list[TrialRow], tune: TuneSpec) -> list[Pick]:
    """Each arm whose budget is used up (``n_trials`` complete or pruned) and has a complete trial:
    the best complete trial's settings (ties: the earlier trial)."""
    picks = []
    for key in dict.fromkeys(r.arm_key for r in rows):
        mine = [r for r in rows if r.arm_key == key]
        complete = [r for r in mine if r.state == "COMPLETE" and r.value is not None]
        pruned = [r for r in mine if r.state == "PRUNED"]
        candidates = [r for r in complete if r.note != "diverged"]  # a diverged setting is never a pick
        if len(complete) + len(pruned) < tune.n_trials or not candidates:
            continue
        best = max(candidates, key=lambda r: (r.value, -r.trial))
        picks.append(Pick(best.arm, key, best.params, best.value, best.trial, len(complete), len(pruned)))
    return picks


def write_records(study: Any, tune: TuneSpec, storage, arms) -> tuple[Path, Path]:
    """``tuning.csv`` and ``picks.yaml`` in the study's report folder, from the storage. (``study`` is a
    ``lightclf.study.spec.Study``, left untyped: the spec reads these records, so no import back.)"""
    rows = trial_rows(storage, arms)
    folder = study.report_folder
    keys = [p.key for p in tune.space]
    table = [
        {
            "arm": r.arm,
            "arm_key": r.arm_key,
            "trial": r.trial,
            "state": r.state,
            "value": "" if r.value is None else f"{r.value:.6f}",
            "seed_values": json.dumps([None if v is None else round(v, 6) for v in r.seed_values]),
            "epochs": r.epochs,
            "fit_seconds": "" if r.fit_seconds is None else r.fit_seconds,
            "note": r.note,
            **{k: r.params.get(k, "") for k in keys},
        }
        for r in rows
    ]
    # Written aside, then moved in: a study or report reading them meanwhile never sees half a file.
    csv_path = write_csv(folder / f".tuning.csv.{os.getpid()}", table, [*BASE_FIELDS, *keys])
    csv_path = csv_path.replace(folder / "tuning.csv")
    picks = {
        p.arm_key: {
            "arm": p.arm,
            "params": p.params,
            "value": round(p.value, 6),
            "trial": p.trial,
            "complete": p.complete,
            "pruned": p.pruned,
        }
        for p in picks_of(rows, tune)
    }
    picks_path = folder / "picks.yaml"
    header = "# Each tuned arm's pick (lightclf tune): its best complete trial on mean validation top-1.\n"
    aside = folder / f".picks.yaml.{os.getpid()}"
    aside.write_text(header + yaml.safe_dump(picks, sort_keys=False))
    aside.replace(picks_path)
    return csv_path, picks_path


def read_trials(folder: Path, tune: TuneSpec) -> list[TrialRow]:
    """``tuning.csv`` back as rows (params typed by the space: numbers as numbers)."""
    path = Path(folder) / "tuning.csv"
    if not path.is_file():
        return []
    rows = []
    with path.open() as fh:
        for raw in csv.DictReader(fh):
            params = {}
            for p in tune.space:
                cell = raw.get(p.key, "")
                if cell != "":
                    params[p.key] = (
                        yaml.safe_load(cell)
                        if p.choices is not None
                        else int(float(cell))
                        if p.integer
                        else float(cell)
                    )
            rows.append(
                TrialRow(
                    arm=raw["arm"],
                    arm_key=raw["arm_key"],
                    trial=int(raw["trial"]),
                    state=raw["state"],
                    value=float(raw["value"]) if raw["value"] else None,
                    seed_values=tuple(json.loads(raw["seed_values"] or "[]")),
                    epochs=int(raw["epochs"] or 0),
                    fit_seconds=float(raw["fit_seconds"]) if raw.get("fit_seconds") else None,
                    params=params,
                    note=raw.get("note") or "",
                )
            )
    return rows


def read_picks(folder: Path) -> dict[str, dict[str, Any]]:
    """``picks.yaml`` back: arm key -> the arm's pick, its value and trial counts."""
    path = Path(folder) / "picks.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
