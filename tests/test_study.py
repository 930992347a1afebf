"""A tiny study (2x2 grid + a baseline) runs end to end, one or two at a time, reports, and resumes
by skipping."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml

from conftest import ONE_THREAD, REPO, finished_test_metrics, run_lightclf, smoke_config
from lightclf.factors import Factors
from lightclf.study.report import RunRow, pareto_front
from lightclf.study.report.plan import load_plan
from lightclf.study.runner import load_study, sweep_config

DDSNET_REPORT = REPO / "configs" / "report" / "ddsnet.yaml"  # the DDSNet studies' roles, knobs and claim
DDSNET = load_plan(str(DDSNET_REPORT))


def _run(values: dict) -> RunRow:
    """A report row from one flat dict of factors and figures (the Factors fields go to factors)."""
    known = {f.name for f in fields(Factors)}
    return RunRow(Factors(**{k: v for k, v in values.items() if k in known}),
                  **{k: v for k, v in values.items() if k not in known})  # fmt: skip


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
            "resolution": [32],
            "dilation": [1, 2],
        },  # fmt: skip
        "runs": [{"network": "mobilenetv3_small_050", "resolution": 32}],
        "seeds": [0],
        "report": str(DDSNET_REPORT),
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
    one = ONE_THREAD  # the same threads per run one and two at a time: the same numbers
    result = run_lightclf("study", "--config", str(tiny_study), "--no-bench", "--jobs", "1", *one)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((tmp_path / "runs" / "tiny-study").iterdir())
    assert len(folders) == 3
    for folder in folders:
        assert json.loads((folder / "results.json").read_text())["status"] == "finished"
        assert json.loads((folder / "study.json").read_text())["study"] == "tiny"

    # The same three runs two at a time (elsewhere) give exactly the sequential metrics. Started cold
    # (not forked from the suite's warm server, tests/warm_fits.py): fresh processes, each with its own
    # string-hash seed, so an order that depended on one could not make both sides agree.
    par_path = tmp_path / "parallel.yaml"
    par_path.write_text(yaml.safe_dump({**yaml.safe_load(tiny_study.read_text()), "save_dir": str(tmp_path / "par")}))
    cold = {"LIGHTCLF_WARM_FITS": ""}
    parallel = run_lightclf("study", "--config", str(par_path), "--no-bench", "--jobs", "2", *one, env=cold)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    par = load_study(par_path)
    assert finished_test_metrics(load_study(tiny_study)) == finished_test_metrics(
        par
    )  # run ids hash the factors: the same
    lines = parallel.stderr.splitlines()
    assert "study: 0 done, 0 running, 3 left (2 at a time)" in lines
    assert sum(" ok in " in line and "test top-1" in line for line in lines) == 3  # one line per finished run
    assert lines[-1].startswith("study: 3 done, 0 running, 0 left, ETA")
    assert "Epoch" not in parallel.stderr  # the fits' own output went to their logs ...
    for spec in par.specs():  # ... but for their one line per epoch, relayed under the run's name
        assert re.search(rf"^\[\d/3\] {re.escape(spec.name)}: epoch 1/\d+: val top-1 ", parallel.stderr, re.M), (
            spec.name
        )
    for spec in par.specs():
        log = (par.run_dir(spec) / "fit.log").read_text()
        assert "$ " in log and "lightclf" in log and "test/acc1" in log
        assert not (par.run_dir(spec) / "claim.json").exists()  # released
    starts = sorted(line.split("]")[0] for line in lines if ": starting (" in line)
    assert starts == ["[1/3", "[2/3", "[3/3"]  # each run once: three runs on two slots, from one queue

    # Re-running skips every finished run and trains nothing.
    again = run_lightclf("study", "--config", str(tiny_study), "--no-bench", *one)
    assert again.returncode == 0
    assert again.stderr.count("finished earlier, skipped") == 3
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 3

    # A killed run (no results.json "finished", but a last.ckpt) resumes from its checkpoint.
    victim = sorted(folders)[0]
    record = json.loads((victim / "results.json").read_text())
    record["status"] = "interrupted"
    (victim / "results.json").write_text(json.dumps(record))
    resumed = run_lightclf("study", "--config", str(tiny_study), "--no-bench", *one)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stderr.count("finished earlier, skipped") == 2 and "resuming from" in resumed.stderr

    out = tmp_path / "reports"
    report = run_lightclf("report", "--study", str(tiny_study), "--out", str(out))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "tiny" / "report.md").read_text()
    assert "## Effect of dilation" in text and "| dilation | d=2 vs d=1" in text  # the knobs its YAML declares
    assert "mobilenetv3_small_050" in text
    with (out / "tiny" / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert {(r["network"], r["resolution"], r["dilation"]) for r in rows} == {
        ("ddsnet", "32", "1"), ("ddsnet", "32", "2"), ("mobilenetv3_small_050", "32", ""),
    }  # fmt: skip
    dilated = [r for r in rows if r["dilation"] == "2"]
    undilated = [r for r in rows if r["dilation"] == "1"]
    assert {r["params"] for r in dilated} == {r["params"] for r in undilated}  # dilation is free
    assert (out / "tiny" / "accuracy_vs_params.png").stat().st_size > 10_000
    assert (out / "tiny" / "accuracy_vs_macs.png").exists()


def test_study_validation_and_sweep(tiny_study, tmp_path, run_here):
    study = load_study(tiny_study)
    assert len(study.specs()) == 3
    assert len({s.run_id for s in study.specs()}) == 3
    sweep = sweep_config(study, str(tiny_study))
    assert sweep["method"] == "grid" and "--point" in sweep["command"]
    assert sweep["parameters"]["run"]["values"] == [s.run_id for s in study.specs()]  # the extra run too
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "base_config": "nope.yaml", "grid": {"network": ["ddsnet"]}}))
    result = run_here("study", "--config", str(bad))
    assert result.returncode == 2 and "base_config nope.yaml not found" in result.stderr
    bad.write_text(yaml.safe_dump({"name": "x", "base_config": str(tiny_study), "grid": {"depth": [1]}}))
    result = run_here("study", "--config", str(bad))
    assert result.returncode == 2 and "grid factors ['depth'] unknown" in result.stderr


def test_pareto_front():
    points = [(1, 1), (2, 3), (3, 2), (4, 4), (0.5, 0.5), (4, 1)]
    assert pareto_front(points) == [3]
    assert pareto_front([(1, 3), (2, 2), (3, 1)]) == [0, 1, 2]


STUDY_CONFIGS = sorted(p for p in REPO.glob("configs/study/*.yaml") if not p.stem.endswith("_base"))


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_sweep_covers_every_run_of_every_study(path, monkeypatch):
    """One sweep point per run of the dry run, one to one, for every shipped study config."""
    from lightclf.study.runner import run_study, select_point

    monkeypatch.chdir(REPO)
    study = load_study(path)
    dry = run_study(study, dry_run=True, log=lambda m: None)
    points = sweep_config(study, str(path))["parameters"]["run"]["values"]
    assert sorted(points) == sorted(dry) and len(points) == len(set(points)) == len(study.specs())
    for run_id in points[:3] + points[-3:]:  # what an agent passes selects exactly that run
        (spec,) = select_point(study, [f"run={run_id}"])
        assert spec.run_id == run_id


def test_seeds_run_configuration_by_configuration(tmp_path):
    from lightclf.study.runner import Study

    study = Study(name="s", base_config="b.yaml", grid={"network": ["ddsnet"], "dilation": [2, 1]}, seeds=[0, 1, 2],
                  runs=[{"network": "googlenet", "resolution": 56, "overrides": {"trainer.max_epochs": 2}}])  # fmt: skip
    order = [(s.factors.get("dilation"), s.factors["network"], s.factors["seed"]) for s in study.specs()]
    assert order == [(2, "ddsnet", 0), (2, "ddsnet", 1), (2, "ddsnet", 2), (1, "ddsnet", 0), (1, "ddsnet", 1),
                     (1, "ddsnet", 2), (None, "googlenet", 0), (None, "googlenet", 1), (None, "googlenet", 2)]  # fmt: skip
    args = study.specs()[-1].cli_args(["a.yaml", "recipe.yaml"], "runs", "p")
    assert args[:5] == ["fit", "--config", "a.yaml", "--config", "recipe.yaml"]
    assert args[-2:] == ["--trainer.max_epochs", "2"]


def test_report_statistics_from_seeded_runs(tmp_path):
    """Paired effects with scipy's t interval and a verdict; per-config and per-run CSVs; error bars."""
    from lightclf.study.report import write_report

    runs = []
    base = {"network": "ddsnet", "width_multiplier": 0.25, "resolution": 28, "small_input": True,
            "params": 215_642, "macs": 9.6e6, "size_mb": 0.86, "receptive_field": 100}  # fmt: skip
    undilated = [0.900, 0.905, 0.898, 0.902]
    gains = [0.010, 0.012, 0.009, 0.011]  # dilation helps by ~1 point in every pair: significant
    for seed, (top1, gain) in enumerate(zip(undilated, gains)):
        runs.append(_run({**base, "dilation": 1, "seed": seed, "top1": top1, "top5": 0.99, "run_id": f"a{seed}"}))
        runs.append(
            _run({**base, "dilation": 2, "seed": seed, "top1": top1 + gain, "top5": 0.99, "run_id": f"b{seed}"})
        )
        runs.append(_run({**base, "resolution": 20, "dilation": 2, "seed": seed, "top1": top1 + gain + (-1) ** seed * 0.004,
                     "top5": 0.99, "run_id": f"c{seed}"}))  # fmt: skip
    runs.append(_run({**base, "dilation": 2, "resolution": 20, "seed": 9, "top1": 0.9, "top5": 0.99, "run_id": "odd"}))
    from lightclf.runs import ExportFigures

    runs[1] = replace(runs[1], export=ExportFigures.from_json({  # seed 0 of the dilated 28 px net was exported: int8 1.6x faster, 0.3 points lost
        "ckpt": "b0.ckpt",
        "fp32": {"top1": 0.91, "size_mb": 0.86, "file_mb": 0.9, "ms_per_image": 0.32, "eager_ms_per_image": 0.4},
        "int8": {"top1": 0.907, "file_mb": 0.3, "ms_per_image": 0.2, "speedup_vs_fp32_onnxruntime": 1.6,
                 "calibration_images": 256, "method": "onnxruntime static QDQ"},
    }))  # fmt: skip
    path = write_report("stats", runs, tmp_path, protocol="Three epochs on digits.", plan=DDSNET)
    text = path.read_text()
    assert text.index("## Protocol") < text.index("## Verdicts") < text.index("## Every configuration")
    dilation_line = next(line for line in text.splitlines() if line.startswith("| dilation |"))
    from scipy import stats

    low, high = stats.ttest_1samp(gains, 0).confidence_interval(0.95)
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}]" in dilation_line and "| significant |" in dilation_line
    int8_line = next(line for line in text.splitlines() if line.startswith("| ddsnet") and "| met |" in line)
    assert "| 0 | 91.00 | 90.70 | -0.30 |" in int8_line and "| 1.60x |" in int8_line
    resolution_line = next(line for line in text.splitlines() if line.startswith("| resolution |"))
    assert "within noise" in resolution_line  # ±0.4 points alternating: the interval spans zero
    with (tmp_path / "runs.csv").open() as fh:
        configs = list(csv.DictReader(fh))
    assert len(configs) == 3
    dilated = next(r for r in configs if r["dilation"] == "2" and r["resolution"] == "28")
    assert dilated["n"] == "4" and dilated["seeds"] == "0 1 2 3" and float(dilated["top1_std"]) > 0
    with (tmp_path / "runs_per_seed.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(runs)

    # The same runs as an interim look at a study planned for more: figures, but no call of any kind.
    early = write_report("stats", runs, tmp_path / "early", plan=DDSNET, planned=len(runs) + 3).read_text()
    dilation_line = next(line for line in early.splitlines() if line.startswith("| dilation |"))
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}]" in dilation_line
    assert f"| interim ({len(runs)} of {len(runs) + 3} runs): no verdict |" in dilation_line
    assert "significant" not in early and "within noise" not in early


def _fake_runs() -> list[RunRow]:
    base = {"width_multiplier": 0.25, "resolution": 28, "small_input": True, "params": 215_642, "macs": 9.6e6,
            "size_mb": 0.86, "receptive_field": 100, "top5": 0.99}  # fmt: skip
    runs = []
    for seed in range(3):
        runs.append(_run({**base, "network": "ddsnet", "dilation": 1, "seed": seed, "top1": 0.90 + seed / 1000,
                          "run_id": f"u{seed}"}))  # fmt: skip
        runs.append(_run({**base, "network": "ddsnet", "dilation": 2, "seed": seed, "top1": 0.91 + seed / 900,
                          "run_id": f"d{seed}"}))  # fmt: skip
    return runs  # fmt: skip


def test_report_survives_a_configuration_without_test_figures(tmp_path):
    """A finished run that never reached its test (no top-1) shows as "-", not a crash, in the
    factor tables and the baseline comparison."""
    from lightclf.study.report import write_report

    untested = [_run({"network": "ddsnet", "width_multiplier": 0.25, "resolution": 28, "small_input": True,
                      "dilation": 4, "seed": 0, "top1": None, "run_id": "untested"}),
                _run({"network": "googlenet", "resolution": 56, "seed": 0, "top1": None, "run_id": "g0"})]  # fmt: skip
    text = write_report("partial", _fake_runs() + untested, tmp_path, plan=DDSNET).read_text()
    assert "| 0.25 | 28 | full | 90.10 | 91.11 | - | +1.01 |" in text  # d=1, 2 and the untested d=4
    assert "Against googlenet" not in text  # nothing to compare with


def test_study_runs_log_their_spec_as_wandb_factors(tmp_path):
    """A study run's W&B factors come from its study.json (budget and overrides the module never
    sees); a plain fit's from the module's hyperparameters."""
    from types import SimpleNamespace

    from lightclf.runs import RunRecord
    from lightclf.training.run_folder import run_factors

    trainer = SimpleNamespace(logger=None, default_root_dir=str(tmp_path))
    module = SimpleNamespace(trainer=trainer, hparams={"network": "ddsnet", "network_kwargs": {"width_multiplier": 1.0},
                                                       "img_size": 28})  # fmt: skip
    plain = run_factors(module)
    assert plain["budget"] == "full" and plain["width_multiplier"] == 1.0 and plain["resolution"] == 28
    RunRecord(folder=tmp_path).write(RunRecord.STUDY, {"study": "s", "network": "ddsnet", "width_multiplier": 1.0,
                                                      "resolution": 28, "dilation": 2, "seed": 3,
                                                      "overrides": {"data.init_args.train_subset": 20000,
                                                                    "trainer.max_epochs": 2}})  # fmt: skip
    study = run_factors(module)
    assert study["budget"] == "20k img x 2 ep" and study["seed"] == 3
    assert study["config"] == "ddsnet w1 28px d2 late (20k img x 2 ep)"


def test_study_benchmark_rows_reach_the_report_rows(tmp_path):
    """The study's closing benchmark (measure.bench.bench_configurations) times each configuration
    in both memory formats; the report attaches each row's faster img/s by its model spec."""
    from lightclf.measure.bench import bench_configurations
    from lightclf.study.report import aggregate
    from lightclf.study.report.throughput import attach_throughput

    spec = "ddsnet:width_multiplier=0.25,dilation=2,small_input=true"
    path = bench_configurations(
        [(spec, 28), (spec, 28)], tmp_path / "bench.csv", repeats=1, batch_size=4, log=lambda m: None
    )
    with path.open() as fh:
        bench = list(csv.DictReader(fh))
    assert [(b["network"], b["resolution"], b["memory_format"], b["device"]) for b in bench] == [
        (spec, "28", "contiguous", "cpu"), (spec, "28", "channels_last", "cpu")]  # fmt: skip
    rows = aggregate([_run({"network": "ddsnet", "width_multiplier": 0.25, "resolution": 28, "dilation": 2,
                            "small_input": True, "seed": 0, "top1": 0.9, "run_id": "r"})])  # fmt: skip
    assert rows[0].factors.model_spec == spec
    attach_throughput(rows, path)
    best = max(bench, key=lambda b: float(b["images_per_s"]))
    assert (
        rows[0].images_per_s == pytest.approx(float(best["images_per_s"]))
        and rows[0].memory_format == best["memory_format"]
    )


def test_wandb_report_spec_offline(tiny_study, tmp_path):
    """Offline, --wandb-report writes the spec: study group filter, panels, axes, grouping."""
    out = tmp_path / "reports"
    result = run_lightclf("report", "--study", str(tiny_study), "--out", str(out), "--wandb-report", "me/tiny-study")
    assert result.returncode == 2 and "no finished runs" in result.stderr  # nothing ran yet: one line, no spec
    from lightclf.study.report.wandb_report import publish

    spec = json.loads(Path(publish(load_study(tiny_study), "me/tiny-study", tmp_path, online=False)).read_text())
    assert spec["project"] == {"name": "tiny-study", "entityName": "me"}
    (grid,) = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    (runset,) = grid["metadata"]["runSets"]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "tiny", "disabled": False}
    ]
    assert runset["grouping"] == [{"section": "config", "name": "factors.value.config"}]
    panels = {
        p["config"].get("chartTitle", p["viewType"]): p for p in grid["metadata"]["panelBankSectionConfig"]["panels"]
    }
    scatter = [p["config"] for p in panels.values() if p["viewType"] == "Scatter Plot"]
    assert {c["xAxis"] for c in scatter} == {"summary:params", "summary:macs", "summary:train/device/samples_per_sec"}
    assert all(c["yAxis"] == "summary:test/acc1" and c["xAxisLogScale"] for c in scatter)
    (parallel,) = [p["config"] for p in panels.values() if p["viewType"] == "Parallel Coordinates Plot"]
    assert [c["accessor"] for c in parallel["columns"]] == [
        "config:factors.value.width_multiplier", "config:factors.value.resolution", "config:factors.value.dilation",
        "config:factors.value.separable", "summary:test/acc1",
    ]  # fmt: skip
    (bar,) = [p["config"] for p in panels.values() if p["viewType"] == "Bar Chart"]
    assert bar["groupBy"] == "factors.value.config" and bar["groupArea"] == "stddev" and bar["groupAgg"] == "mean"
    (line,) = [p["config"] for p in panels.values() if p["viewType"] == "Run History Line Plot"]
    assert line["metrics"] == ["val/acc1"] and line["groupBy"] == "factors.value.network"
    assert "Run Comparer" in {p["viewType"] for p in panels.values()}


def test_wandb_summary_run_offline(tiny_study, tmp_path):
    """The study summary run holds the per-run, per-configuration and effects tables (offline)."""
    from lightclf.study.report import log_summary_run, write_report
    from lightclf.study.wandb_records import read_run

    study = load_study(tiny_study)
    out = tmp_path / "reports" / "tiny"
    write_report("tiny", _fake_runs(), out, plan=DDSNET)
    log_summary_run(study, _fake_runs(), out)
    (segment,) = list(Path(study.save_dir).glob("wandb/offline-run-*/run-*.wandb"))
    for _ in range(20):  # under load the W&B service can still be flushing the file when finish() returns
        run = read_run(segment)
        if run["config"].get("study") and run["history"]:
            break
        time.sleep(0.5)
    assert run["config"].get("study") == "tiny", (run, segment)
    (row,) = run["history"]
    assert row["runs/_type"] == row["configurations/_type"] == row["effects/_type"] == "table-file"
    assert (row["runs/nrows"], row["configurations/nrows"], row["effects/nrows"]) == (6, 2, 1)  # the dilation effect
    assert row["plots/accuracy_vs_params/_type"] == "image-file"
    assert run["summary"]["n_configurations"] == 2 and run["summary"]["n_runs"] == 6


def test_finished_runs_are_archived_and_count_without_their_folders(tmp_path):
    """A machine without the run folders (a fresh clone) still skips finished runs and reports them."""
    import shutil

    from lightclf.study.report import collect_runs
    from lightclf.study.runner import Study, archive_run, run_status

    study = Study(name="arch", base_config="b.yaml", grid={"network": ["ddsnet"], "dilation": [1, 2]}, seeds=[0],
                  save_dir=str(tmp_path / "runs"), project="p", records=str(tmp_path / "records"))  # fmt: skip
    finished, pending = study.specs()
    folder = study.run_dir(finished)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (folder / "results.json").write_text(json.dumps({"status": "finished", "test_metrics": {"test/acc1": 0.9}}))
    (folder / "complexity.json").write_text(json.dumps({"params": 1000, "macs": 2000}))
    (folder / "study.json").write_text(json.dumps({"study": "arch", **finished.factors}))
    for spec in study.specs():
        archive_run(study, spec)  # what the runner does after each run (the pending one has nothing yet)
    archived = tmp_path / "records" / finished.run_id
    assert sorted(p.name for p in archived.iterdir()) == ["complexity.json", "results.json", "study.json"]
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: no run folders, only the committed records
    assert run_status(study, finished) == "finished" and run_status(study, pending) == "new"
    (run,) = collect_runs(study.save_dir, study.project, "arch", study.records)
    assert run.top1 == 0.9 and run.params == 1000 and run.factors.dilation == finished.factors["dilation"]


def test_budgets_never_pair_and_a_stale_folder_does_not_hide_an_archived_run(tmp_path):
    """Runs trained on different budgets (study overrides) are separate configurations; a run
    folder a killed process left "running" does not hide the finished copy in the records."""
    from lightclf.runs import RunRecord
    from lightclf.study.report import aggregate, collect_runs, compare_configurations

    factors = {"study": "s", "network": "ddsnet", "width_multiplier": 1.0, "resolution": 28, "dilation": 2,
               "seed": 0, "overrides": {"data.init_args.train_subset": 20000, "trainer.max_epochs": 2}}  # fmt: skip
    stale = RunRecord(folder=tmp_path / "runs" / "p" / "s-abc")
    stale.write(RunRecord.STUDY, factors)
    stale.update(status="running")
    archived = RunRecord(folder=tmp_path / "records" / "s-abc")
    archived.write(RunRecord.STUDY, factors)
    archived.update(status="finished", test_metrics={"test/acc1": 0.88, "test/acc5": 0.99}, epoch=1)
    (run,) = collect_runs(tmp_path / "runs", "p", "s", tmp_path / "records")
    assert run.top1 == 0.88 and run.factors.budget == "20k img x 2 ep"

    runs = [run]
    for seed in range(3):
        for width, top1 in ((0.25, 0.90), (0.5, 0.91)):
            runs.append(_run({"network": "ddsnet", "width_multiplier": width, "resolution": 28, "dilation": 2,
                         "budget": "full", "seed": seed, "top1": top1 + seed / 1000, "run_id": f"{width}-{seed}"}))  # fmt: skip
    knobs = compare_configurations(aggregate(runs, DDSNET), DDSNET).knobs
    found = {k.compared.split(",")[0]: k.effect for k in knobs if k.name == "width multiplier"}
    assert set(found) == {"0.5 vs 0.25"} and found["0.5 vs 0.25"].n == 3  # 1.0 (20k x 2 ep) pairs with nothing
    assert len(aggregate(runs)) == 3


def test_baseline_comparisons_use_the_proposed_dilated_net_on_the_same_budget(tmp_path):
    """The paper's GoogLeNet claim and every other baseline are compared with the dilated width-1.0
    net trained on the baselines' budget, never with its undilated ablation (even when that scores higher)."""
    from lightclf.study.report import write_report

    small = {"budget": "20k img x 2 ep", "top5": 0.99, "size_mb": 1.0, "receptive_field": 100}
    nets = {  # network, dilation -> (top-1 of seeds 0-2, params)
        ("ddsnet", 2): ([0.877, 0.880, 0.875], 3_217_226),
        ("ddsnet", 1): ([0.890, 0.891, 0.889], 3_217_226),
        ("googlenet", None): ([0.866, 0.858, 0.874], 5_610_154),
        ("mobilenetv2_100", None): ([0.80, 0.83, 0.85], 2_236_682),
    }
    runs = []
    for (network, dilation), (top1s, params) in nets.items():
        for seed, top1 in enumerate(top1s):
            factors = (
                {"width_multiplier": 1.0, "dilation": dilation, "resolution": 28} if dilation else {"resolution": 56}
            )
            runs.append(_run({**small, **factors, "network": network, "seed": seed, "top1": top1, "params": params,
                         "macs": 1e8, "run_id": f"{network}{dilation}{seed}"}))  # fmt: skip
    for seed, top1 in enumerate([0.80, 0.81, 0.79]):  # GoogLeNet also at 28 px (1x1 last stage): not the claim's
        runs.append(_run({**small, "network": "googlenet", "resolution": 28, "seed": seed, "top1": top1,
                     "params": 5_610_154, "macs": 2.2e7, "run_id": f"g28{seed}"}))  # fmt: skip
        runs.append(_run({**small, "budget": "full", "network": "mobilenetv1_100", "resolution": 56, "seed": seed,
                     "top1": top1, "params": 3_217_226, "macs": 4.2e7, "run_id": f"m1{seed}"}))  # fmt: skip
    for seed in range(3):  # a full-budget configuration: its own plot panel, in no comparison above
        runs.append(_run({**small, "budget": "full", "network": "ddsnet", "width_multiplier": 0.25, "dilation": 2,
                     "resolution": 28, "seed": seed, "top1": 0.915, "params": 215_642, "macs": 9.6e6,
                     "run_id": f"full{seed}"}))  # fmt: skip
    text = write_report("baselines", runs, tmp_path, plan=DDSNET).read_text()
    from PIL import Image

    with Image.open(tmp_path / "accuracy_vs_params.png") as plot:  # two budgets: two panels side by side
        assert plot.size == (1320, 540)
    from scipy import stats

    claim = next(line for line in text.splitlines() if line.startswith("- **The paper's GoogLeNet claim**"))
    assert "87.73 ± 0.25% (n=3) vs 86.60 ± 0.80% (n=3)" in claim and "2.39M fewer parameters" in claim
    assert "1.00x the MACs (100.0M vs 100.0M)" in claim
    welch = stats.ttest_ind([0.877, 0.880, 0.875], [0.866, 0.858, 0.874], equal_var=False).confidence_interval(0.95)
    assert f"[{100 * welch.low:+.2f}, {100 * welch.high:+.2f}]" in claim
    mobilenet = next(line for line in text.splitlines() if line.startswith("- **Against mobilenetv2_100**"))
    assert (
        "87.73 ± 0.25% (n=3) vs 82.67" in mobilenet
        and "DDSNet has 0.98M more parameters (3.22M vs 2.24M) and 1.00x the MACs" in mobilenet
    )
    assert any(line.startswith("- **Against googlenet** at 28 px") for line in text.splitlines())
    rows = [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| DDSNet α=1.0 vs ")]
    assert rows == [  # the claim (GoogLeNet at its largest input) first; MobileNet v1 (full budget) pairs with nothing
        ["| DDSNet α=1.0 vs googlenet", "unpaired (Welch), 56 px, budget 20k img x 2 ep"],
        ["| DDSNet α=1.0 vs googlenet", "unpaired (Welch), 28 px, budget 20k img x 2 ep"],
        ["| DDSNet α=1.0 vs mobilenetv2_100", "unpaired (Welch), 56 px, budget 20k img x 2 ep"],
    ]


def test_report_command_flags_out_notes_and_wandb_summary(tmp_path, run_here):
    """`lightclf report --out DIR --notes FILE --wandb-summary` from archived records alone (offline)."""
    from lightclf.runs import RunRecord

    study_yaml = tmp_path / "flags.yaml"
    study_yaml.write_text(yaml.safe_dump({
        "name": "flags", "base_config": str(Path(__file__).resolve().parents[1] / "configs/quickstart.yaml"),
        "save_dir": str(tmp_path / "runs"), "project": "p", "records": str(tmp_path / "records"), "seeds": [0, 1],
        "grid": {"network": ["ddsnet"], "width_multiplier": [0.25], "resolution": [28], "dilation": [1, 2]},
        "report": {"knobs": [{"factor": "dilation"}]},  # declared inline: the dilation effect, nothing else
    }))  # fmt: skip
    study = load_study(study_yaml)
    for i, spec in enumerate(study.specs()):
        record = RunRecord(folder=tmp_path / "records" / spec.run_id)
        record.write(RunRecord.STUDY, {"study": "flags", **spec.factors})
        record.write(RunRecord.COMPLEXITY, {"params": 215642, "macs": 9599296})
        record.update(status="finished", test_metrics={"test/acc1": 0.90 + 0.01 * i, "test/acc5": 0.99})
    notes = tmp_path / "notes.md"
    notes.write_text("**Setup note:** four hand-made records.")
    out = tmp_path / "elsewhere"
    result = run_here("report", "--study", str(study_yaml), "--out", str(out), "--notes", str(notes), "--wandb-summary")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out / 'flags' / 'report.md'} (4 runs)" in result.stdout
    assert "W&B summary run:" in result.stdout and "offline" in result.stdout
    text = (out / "flags" / "report.md").read_text()
    assert "**Setup note:** four hand-made records." in text and "## Effects" in text
    assert not (Path("reports") / "flags").exists()  # --out was honoured


def test_an_ablation_of_a_timm_knob_runs_from_yaml_alone(tmp_path):
    """configs/study/timm_stochastic_depth.yaml names a network and a knob lightclf's code never does;
    run tiny on digits (its base config, save dir and seeds swapped, nothing else), the study trains
    both arms and the report answers its question."""
    study_yaml = yaml.safe_load((REPO / "configs/study/timm_stochastic_depth.yaml").read_text())
    network = study_yaml["grid"]["network"][0]
    knob = next(k for k in study_yaml["grid"] if "." in k)
    for source in (REPO / "lightclf").rglob("*.py"):  # YAML alone: no code names them
        text = source.read_text()
        assert network not in text and knob.rsplit(".", 1)[-1] not in text, source
    base = smoke_config(tmp_path, **{"trainer.max_epochs": 1, "trainer.limit_train_batches": 4})
    study_yaml.update(
        base_config=str(base), save_dir=str(tmp_path / "runs"), records=str(tmp_path / "records"), seeds=[0, 1]
    )
    study_yaml["grid"]["resolution"] = [32]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_yaml))
    ran = run_lightclf("study", "--config", str(path), "--no-bench", *ONE_THREAD, timeout=900)
    assert ran.returncode == 0, ran.stderr[-3000:]
    study = load_study(path)
    for spec in study.specs():
        config = yaml.safe_load((study.run_dir(spec) / "config.yaml").read_text())
        assert config["model"]["network_kwargs"] == {knob.rsplit(".", 1)[-1]: spec.factors[knob]}
    report = run_lightclf("report", "--study", str(path), "--out", str(tmp_path / "reports"))
    assert report.returncode == 0, report.stderr[-3000:]
    verdicts = list(csv.DictReader((tmp_path / "reports" / study.name / "verdicts.csv").open()))
    (row,) = verdicts
    assert row["question"] == study_yaml["questions"][0]["name"] and row["n"] == "2" and row["paired"] == "True"
    assert row["verdict"] in ("better", "worse", "inconclusive") or row["verdict"].startswith("equivalent")
    text = (tmp_path / "reports" / study.name / "report.md").read_text()
    assert "Where dilation reaches" not in text  # no DDSNet arm: no DDSNet geometry
    assert "## How far the runs still climbed" in text and "## Where the runs ran" in text  # any study's sections
