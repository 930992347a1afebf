"""A tiny study (2x2 grid + a baseline) runs end to end, reports, and resumes by skipping."""

from __future__ import annotations

import csv
import json
import os

import pytest
import yaml

from conftest import run_lightclf, smoke_config
from lightclf.report import pareto_front
from lightclf.study import load_study, sweep_config


@pytest.fixture
def tiny_study(tmp_path):
    base = smoke_config(tmp_path, **{"trainer.max_epochs": 1, "trainer.limit_train_batches": 6})
    study = {
        "name": "tiny",
        "base_config": str(base),
        "save_dir": str(tmp_path / "runs"),
        "project": "tiny-study",
        "grid": {
            "network": ["ddsnet"],
            "small_input": [True],
            "width_multiplier": [0.25],
            "resolution": [24, 32],
            "dilation": [1, 2],
        },  # fmt: skip
        "runs": [{"network": "mobilenetv3_small_050", "resolution": 32}],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def parent_wandb_service(monkeypatch):
    """This process holds a live W&B service (as after any in-process wandb.init): wandb exports
    WANDB_SERVICE, which every child process would inherit and share."""
    import wandb

    monkeypatch.setenv("WANDB_SERVICE", "unset")  # so that teardown restores the variable's absence
    monkeypatch.delenv("WANDB_SERVICE")
    wandb.setup().ensure_service()
    assert "WANDB_SERVICE" in os.environ
    yield
    wandb.teardown()


def test_tiny_study_runs_reports_and_resumes(tiny_study, tmp_path, parent_wandb_service):
    # The runner gives each run its own W&B service: with a shared one, resuming a run id
    # that an earlier process used failed with "run ID ... is in use" (CI, stop 6).
    result = run_lightclf("study", "--config", str(tiny_study), "--no-bench")
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((tmp_path / "runs" / "tiny-study").iterdir())
    assert len(folders) == 5
    for folder in folders:
        assert json.loads((folder / "results.json").read_text())["status"] == "finished"
        assert json.loads((folder / "study.json").read_text())["study"] == "tiny"

    # Re-running skips every finished run and trains nothing.
    again = run_lightclf("study", "--config", str(tiny_study), "--no-bench")
    assert again.returncode == 0
    assert again.stderr.count("finished earlier, skipped") == 5
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 5

    # A killed run (no results.json "finished", but a last.ckpt) resumes from its checkpoint.
    victim = sorted(folders)[0]
    record = json.loads((victim / "results.json").read_text())
    record["status"] = "interrupted"
    (victim / "results.json").write_text(json.dumps(record))
    resumed = run_lightclf("study", "--config", str(tiny_study), "--no-bench")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stderr.count("finished earlier, skipped") == 4 and "resuming from" in resumed.stderr

    out = tmp_path / "reports"
    report = run_lightclf("report", "--study", str(tiny_study), "--out", str(out))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "tiny" / "report.md").read_text()
    assert "## Effect of dilation" in text and "## Effect of resolution" in text
    assert "mobilenetv3_small_050" in text
    with (out / "tiny" / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    assert {(r["network"], r["resolution"], r["dilation"]) for r in rows} == {
        ("ddsnet", "24", "1"), ("ddsnet", "24", "2"), ("ddsnet", "32", "1"), ("ddsnet", "32", "2"),
        ("mobilenetv3_small_050", "32", ""),
    }  # fmt: skip
    dilated = [r for r in rows if r["dilation"] == "2"]
    undilated = [r for r in rows if r["dilation"] == "1"]
    assert {r["params"] for r in dilated} == {r["params"] for r in undilated}  # dilation is free
    assert (out / "tiny" / "accuracy_vs_params.png").stat().st_size > 10_000
    assert (out / "tiny" / "accuracy_vs_macs.png").exists()


def test_study_validation_and_sweep(tiny_study, tmp_path):
    study = load_study(tiny_study)
    assert len(study.specs()) == 5
    assert len({s.run_id for s in study.specs()}) == 5
    sweep = sweep_config(study, str(tiny_study))
    assert sweep["method"] == "grid" and sweep["parameters"]["dilation"] == {"values": [1, 2]}
    assert "--point" in sweep["command"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "base_config": "nope.yaml", "grid": {"network": ["ddsnet"]}}))
    result = run_lightclf("study", "--config", str(bad))
    assert result.returncode == 2 and "base_config nope.yaml not found" in result.stderr
    bad.write_text(yaml.safe_dump({"name": "x", "base_config": str(tiny_study), "grid": {"depth": [1]}}))
    result = run_lightclf("study", "--config", str(bad))
    assert result.returncode == 2 and "grid factors ['depth'] unknown" in result.stderr


def test_pareto_front():
    points = [(1, 1), (2, 3), (3, 2), (4, 4), (0.5, 0.5), (4, 1)]
    assert pareto_front(points) == [3]
    assert pareto_front([(1, 3), (2, 2), (3, 1)]) == [0, 1, 2]
