"""`lightclf tune`: the same Optuna search for every arm, on validation only, shared and resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ONE_THREAD, PYTHONPATH, REPO, run_lightclf, smoke_config
from lightclf.errors import ConfigError
from lightclf.study.spec import load_study
from lightclf.study.tuning.records import read_picks, read_trials
from lightclf.study.tuning.space import Param, TuneSpec

TESTS = Path(__file__).resolve().parent
STAND_IN = [sys.executable, str(TESTS / "tune_helpers.py")]
LR = "model.optimizer.init_args.lr"


def tune_study(tmp_path: Path, *, n_trials: int = 3, seeds=(10, 11), base: Path | None = None, **tune) -> Path:
    """A study over two DDSNet arms (dilation 1 and 2) with a tune block over the peak LR."""
    base = base or smoke_config(tmp_path, **{"trainer.max_epochs": 3})
    study = {
        "name": "tinytune",
        "base_config": str(base),
        "save_dir": str(tmp_path / "runs"),
        "project": "tt",
        "report_dir": str(tmp_path / "report"),
        "seeds": [0],
        "grid": {"network": ["ddsnet"], "small_input": [True], "width_multiplier": [0.25], "dilation": [1, 2]},
        "tune": {
            "n_trials": n_trials,
            "seeds": list(seeds),
            "space": {LR: {"low": 0.001, "high": 1.0, "log": True}},
            "sampler": {"seed": 0},
            **tune,
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


# -- the space and its bad input -------------------------------------------------------------------
def test_space_parses_ranges_choices_and_flags_picks_on_the_edge():
    spec = TuneSpec.parse(
        {
            "n_trials": 9,
            "space": {LR: {"low": 0.01, "high": 1.0, "log": True}, "model.label_smoothing": {"choices": [0.0, 0.1]}},
        }
    )
    lr = spec.param(LR)
    assert lr.log and spec.startup_trials == 3 and spec.seeds == (1000, 1001)
    assert lr.on_edge(0.0105) and lr.on_edge(0.95) and not lr.on_edge(0.1)
    assert not spec.param("model.label_smoothing").on_edge(0.0)


@pytest.mark.parametrize(
    "space, n_trials, message",
    [
        ({LR: {"low": 0.5, "high": 0.1}}, 3, "empty or reversed range"),
        ({LR: {"low": 0.1, "high": 0.1}}, 3, "empty or reversed range"),
        ({LR: {"low": 0.0, "high": 1.0, "log": True}}, 3, "log range needs a positive low bound"),
        ({LR: {"low": 0.01, "high": 1.0}}, 0, "n_trials must be an integer >= 1"),
        ({LR: {"choices": [0.1]}}, 3, "two or more values"),
        ({}, 3, "name one or more config keys"),
    ],
)
def test_bad_space_is_one_line_and_starts_nothing(tmp_path, run_here, space, n_trials, message):
    path = tune_study(tmp_path, n_trials=n_trials)
    raw = yaml.safe_load(path.read_text())
    raw["tune"]["space"] = space
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "tuning.csv").write_text("earlier\n")
    result = run_here("tune", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started
    assert (tmp_path / "report" / "tuning.csv").read_text() == "earlier\n"  # nothing overwritten


def test_unknown_space_key_and_unwritable_storage_are_one_line(tmp_path):
    path = tune_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["tune"]["space"] = {"model.optimizer.init_args.no_such_knob": {"low": 0.1, "high": 1.0}}
    path.write_text(yaml.safe_dump(raw))
    result = run_lightclf("tune", "--config", str(path), timeout=120)
    assert result.returncode == 2
    assert "no_such_knob" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list((tmp_path / "runs").glob("tt/*"))

    blocker = tmp_path / "file"
    blocker.write_text("")
    raw["tune"]["space"] = {LR: {"low": 0.01, "high": 1.0, "log": True}}
    raw["tune"]["storage"] = str(blocker / "sub" / "tune.journal")  # a folder under a file
    path.write_text(yaml.safe_dump(raw))
    result = run_lightclf("tune", "--config", str(path), "--no-check", timeout=120)
    assert result.returncode == 2 and "cannot be written" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_param_suggests_through_optuna_with_the_config_key_as_name():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = [Param.parse(LR, {"low": 0.01, "high": 1.0, "log": True}).suggest(trial)]
    values.append(Param.parse("trainer.max_epochs", {"low": 2, "high": 4, "int": True}).suggest(trial))
    assert 0.01 <= values[0] <= 1.0 and values[1] in (2, 3, 4)
    assert set(trial.params) == {LR, "trainer.max_epochs"}


# -- the tuner through its public API, with stand-in fits (no torch: seconds, not minutes) ------------
def _tuner_script(study: Path, jobs: int = 1) -> list[str]:
    code = (
        "import sys; from lightclf.study.spec import load_study; from lightclf.study.execution import plan_slots;"
        "from lightclf.study.tuning.tuner import Tuner;"
        f"study = load_study({str(study)!r});"
        f"Tuner(study, plan_slots({jobs} * len(study.tuning.seeds), None, 1), fit_command={STAND_IN!r}).run()"
    )
    return [sys.executable, "-c", code]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PYTHONPATH, **extra}


def test_two_tuners_share_one_storage_and_never_run_a_trial_twice(tmp_path):
    path = tune_study(tmp_path, n_trials=4, pruner={"name": "none"})
    env = _env(STANDIN_EPOCH_SECONDS="0.3")
    procs = [
        subprocess.Popen(_tuner_script(path), cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    study = load_study(path)
    rows = read_trials(study.report_folder, study.tuning)
    for arm in {r.arm_key for r in rows}:
        numbers = [r.trial for r in rows if r.arm_key == arm]
        assert sorted(numbers) == [0, 1, 2, 3]  # every trial number once, n_trials in all
        assert all(r.state == "COMPLETE" for r in rows if r.arm_key == arm)
    # Both tuners took trials from the one storage.
    import optuna

    from lightclf.study.tuning.records import RUNNER
    from lightclf.study.tuning.storage import open_storage, storage_path
    from lightclf.study.tuning.tuner import tuning_arms

    storage = open_storage(storage_path(study, study.tuning))
    pids = {
        t.user_attrs[RUNNER]["pid"]
        for arm in tuning_arms(study)
        for t in optuna.load_study(study_name=arm.optuna_name, storage=storage).get_trials()
    }
    assert pids == {proc.pid for proc in procs}
    picks = read_picks(study.report_folder)
    assert len(picks) == 2 and all(p["complete"] == 4 for p in picks.values())


def test_a_killed_tuner_resumes_with_the_interrupted_trial_failed_and_retried(tmp_path):
    path = tune_study(tmp_path, n_trials=3, pruner={"name": "none"})
    marker = tmp_path / "started"
    env = _env(STANDIN_EPOCH_SECONDS="0.5", STANDIN_MARKER=str(marker))
    proc = subprocess.Popen(_tuner_script(path), cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)  # an epoch or so into trial 0
    os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its fits die at once, mid-trial
    proc.wait()
    study = load_study(path)
    import optuna

    from lightclf.study.tuning.storage import open_storage, storage_path
    from lightclf.study.tuning.tuner import tuning_arms

    storage = open_storage(storage_path(study, study.tuning))
    first = tuning_arms(study)[0]
    (killed,) = optuna.load_study(study_name=first.optuna_name, storage=storage).get_trials()
    assert killed.state.name == "RUNNING"

    again = subprocess.run(_tuner_script(path), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "lost its runner: re-queued" in again.stdout + again.stderr
    rows = [r for r in read_trials(study.report_folder, study.tuning) if r.arm_key == first.key]
    states = {r.trial: r.state for r in rows}
    assert states[0] == "FAIL"  # the interrupted trial is not a result
    assert sum(s == "COMPLETE" for s in states.values()) == 3
    retry = next(r for r in rows if r.trial == 1)
    assert retry.params == rows[0].params  # its settings were retried, not dropped
    assert read_picks(study.report_folder)[first.key]["complete"] == 3


def test_a_clearly_worse_trial_is_pruned(tmp_path):
    import optuna

    from lightclf.study.tuning.storage import open_storage, storage_path
    from lightclf.study.tuning.tuner import tuning_arms

    path = tune_study(tmp_path, n_trials=3, pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    raw = yaml.safe_load(path.read_text())
    raw["grid"]["dilation"] = [1]  # one arm is enough
    path.write_text(yaml.safe_dump(raw))
    study = load_study(path)
    (arm,) = tuning_arms(study)
    storage = open_storage(storage_path(study, study.tuning))
    ostudy = optuna.create_study(storage=storage, study_name=arm.optuna_name, direction="maximize")
    for lr in (0.1, 0.12, 0.001):  # two good trials, then one three decades off: worse at every epoch
        ostudy.enqueue_trial({LR: lr})
    result = subprocess.run(_tuner_script(path), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r.trial: r for r in read_trials(study.report_folder, study.tuning)}
    assert [rows[i].state for i in range(3)] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert rows[2].value is None and rows[2].epochs < 3  # stopped early, never a result
    assert read_picks(study.report_folder)[arm.key]["params"][LR] == pytest.approx(0.1)


# -- a real tiny tune on digits, then the study at each arm's pick ------------------------------------
def test_tiny_tune_on_digits_then_the_study_uses_each_arms_pick(tmp_path):
    base = smoke_config(
        tmp_path,
        **{
            "trainer.max_epochs": 2,
            "trainer.limit_train_batches": 3,
            "trainer.limit_val_batches": 2,
            "trainer.limit_test_batches": 2,
            "data.class_path": "kill_points.NoTestDigits",
        },
    )
    # One trial per arm: the real fits prove what a stand-in cannot (a fit's records feed the tuner,
    # the test split stays unread, trials keep no checkpoints, the study trains each arm's pick);
    # several trials, pruning and resuming are tested on stand-in fits above, at no torch cost.
    path = tune_study(tmp_path, base=base, n_trials=1, budget={"trainer.max_epochs": 1})
    started = time.time()
    result = run_lightclf("tune", "--config", str(path), env={"LIGHTCLF_FORBID_TEST": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(path)
    rows = read_trials(study.report_folder, study.tuning)
    per_arm = {key: [r for r in rows if r.arm_key == key] for key in {r.arm_key for r in rows}}
    assert len(per_arm) == 2 and all(len(trials) == 1 for trials in per_arm.values())
    assert all(r.state == "COMPLETE" and len(r.seed_values) == 2 for r in rows)
    header = (study.report_folder / "tuning.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["arm", "arm_key", "trial", "state", "value"] and "seed_values" in header and LR in header
    for folder in (tmp_path / "runs" / "tt").iterdir():  # validation only: no test stage, no test figures
        record = json.loads((folder / "results.json").read_text())
        assert record["status"] == "fit_done" and not record.get("test_metrics"), folder
        assert not (folder / "checkpoints").exists()  # told trials keep no checkpoints
    picks = read_picks(study.report_folder)
    assert set(picks) == set(per_arm)
    print(f"tiny tune: {time.time() - started:.0f} s")

    ran = run_lightclf("study", "--config", str(path), "--no-bench", *ONE_THREAD, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    ready, waiting = study.with_picks(study.specs())
    assert not waiting and len(ready) == 2
    for spec in ready:  # a tuned arm's runs are named by their pick too
        folder = study.run_dir(spec)
        used = yaml.safe_load((folder / "config.yaml").read_text())["model"]["optimizer"]["init_args"]["lr"]
        assert used == pytest.approx(picks[spec.arm_key]["params"][LR])
        assert json.loads((folder / "study.json").read_text())["tuned"][LR] == pytest.approx(used)
        assert json.loads((folder / "results.json").read_text())["status"] == "finished"


def test_a_validation_only_fit_refuses_the_test_split(tmp_path, tmp_config):
    config = tmp_config(**{"trainer.max_epochs": 1, "trainer.limit_train_batches": 2})
    result = run_lightclf(
        "fit", "--config", str(config), "--validation_only", "true",
        "--trainer.callbacks+=lightclf.training.evaluation.TestEveryEpoch",
    )  # fmt: skip
    assert result.returncode == 2
    assert "test split is locked" in result.stderr.strip().splitlines()[-1]


def test_study_waits_for_untuned_arms_and_tune_false_keeps_the_recipe(tmp_path):
    path = tune_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["runs"] = [{"network": "mobilenetv3_small_050", "resolution": 32, "tune": False}]
    path.write_text(yaml.safe_dump(raw))
    study = load_study(path)
    arms = study.arms()
    assert [tuned for _, tuned in arms] == [True, True, False]
    ready, waiting = study.with_picks(study.specs())
    assert [s.factors["network"] for s in ready] == ["mobilenetv3_small_050"] and len(waiting) == 2
    args = ready[0].cli_args("base.yaml", "runs", "p")
    assert "recipe" in json.loads(args[args.index("--trainer.logger.init_args.tags") + 1])
    # A pick for one arm releases that arm's runs, carrying the pick (not a factor: the arm is the same).
    study.report_folder.mkdir(parents=True)
    key = arms[0][0].arm_key
    (study.report_folder / "picks.yaml").write_text(yaml.safe_dump({key: {"params": {LR: 0.05}}}))
    ready, waiting = study.with_picks(study.specs())
    tuned = [s for s in ready if s.arm_key == key]
    assert len(tuned) == 1 and tuned[0].tuned == {LR: 0.05} and len(waiting) == 1
    args = tuned[0].cli_args("base.yaml", "runs", "p")
    assert args[args.index(f"--{LR}") + 1] == "0.05"
    untuned = next(s for s in study.specs() if s.arm_key == key)
    assert tuned[0].arm_key == untuned.arm_key and tuned[0].run_id != untuned.run_id  # another pick: another run


def test_split_per_seed_sets_the_data_seed_and_fixed_keeps_the_base(tmp_path):
    path = tune_study(tmp_path)
    study = load_study(path)
    assert study.split == "per_seed"
    args = study.specs()[0].cli_args("base.yaml", "runs", "p")
    assert args[args.index("--data.init_args.seed") + 1] == "0"
    raw = yaml.safe_load(path.read_text())
    raw["split"] = "fixed"
    path.write_text(yaml.safe_dump(raw))
    assert "--data.init_args.seed" not in load_study(path).specs()[0].cli_args("base.yaml", "runs", "p")
    raw["split"] = "sometimes"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="split must be one of"):
        load_study(path)


def test_report_and_wandb_spec_carry_the_tuning_section(tmp_path):
    from lightclf.study.report.wandb_report import publish

    path = tune_study(tmp_path, n_trials=3, pruner={"name": "none"})
    result = subprocess.run(_tuner_script(path), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    study = load_study(path)
    report = run_lightclf("report", "--study", str(path), "--out", str(tmp_path / "out"))
    assert report.returncode == 2 and "no finished runs" in report.stderr  # no final run yet: one line
    from lightclf.study.report.tuning import tuning_section

    section = "\n".join(tuning_section(study, tmp_path / "out"))
    assert "| ddsnet w0.25 d1 | 3 / 0 / 0 |" in section and "picked" in section
    assert (tmp_path / "out" / f"tuning_{LR.replace('.', '_')}.png").stat().st_size > 5000
    spec = json.loads(Path(publish(study, "me/tt", tmp_path, online=False)).read_text())
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    assert len(grids) == 2
    (tuning,) = grids[1]["metadata"]["runSets"]
    assert tuning["filters"]["filters"][0]["value"] == "tinytune-tune"
    panels = grids[1]["metadata"]["panelBankSectionConfig"]["panels"]
    (parallel,) = [p["config"] for p in panels if p["viewType"] == "Parallel Coordinates Plot"]
    assert parallel["columns"][0]["accessor"].endswith(LR) and parallel["columns"][-1]["accessor"] == "summary:val/acc1"
    assert any("trials: complete / pruned / failed" in json.dumps(b) for b in spec["spec"]["blocks"])


def test_bench_grid_points_and_time_to_target():
    from lightclf.study.tuning.bench import grid_points, time_to_target
    from lightclf.study.tuning.records import TrialRow

    space = (Param.parse(LR, {"low": 0.01, "high": 1.0, "log": True}), Param.parse("model.x", {"choices": ["a", "b"]}))
    points = grid_points(space, 3)
    assert len(points) == 6 and [p[LR] for p in points[::2]] == pytest.approx([0.01, 0.1, 1.0])

    def row(trial, state, value, seconds=60.0):
        return TrialRow("arm", "k", trial, state, value, (), 2, seconds, {})

    rows = [row(0, "COMPLETE", 0.80), row(1, "PRUNED", None, 30.0), row(2, "COMPLETE", 0.851), row(3, "COMPLETE", 0.86)]
    assert time_to_target(rows, 0.85) == (3, pytest.approx(2.5))
    assert time_to_target(rows, 0.9) == (None, pytest.approx(3.5))
