"""Scale-out: parallel studies with claims, the SLURM path through submitit's local executor, W&B
sweep agents, and the bad-input errors of `lightclf study`."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from conftest import ONE_THREAD, finished_test_metrics, run_lightclf, smoke_config
from lightclf.study.execution import Claim, plan_slots
from lightclf.study.runner import load_study


def _tiny_study(tmp_path, name: str = "scale", seeds=(0, 1), epochs: int = 1, **extra) -> tuple:
    base = smoke_config(tmp_path, **{"trainer.max_epochs": epochs, "trainer.limit_train_batches": 4})
    study = {
        "name": name,
        "base_config": str(base),
        "save_dir": str(tmp_path / "runs"),
        "project": "scale",
        "grid": {"network": ["ddsnet"], "small_input": [True], "width_multiplier": [0.25], "resolution": [24],
                 "dilation": [1, 2]},
        "seeds": list(seeds),
        **extra,
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path, load_study(path)


# Two at a time equals one at a time: tests/test_study.py's tiny study runs both.


def test_claims_are_atomic_and_stale_ones_of_dead_local_processes_are_taken_over(tmp_path):
    claim = Claim(tmp_path / "run" / "claim.json")
    assert claim.acquire() is None and claim.read()["pid"] == os.getpid()
    assert claim.acquire() is not None  # held by a live process (this one): never run twice
    claim.release()
    assert not claim.path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    claim.path.write_text(json.dumps({"pid": int(dead.stdout), "host": host}))
    assert claim.acquire() is None and claim.read()["pid"] == os.getpid()  # a dead local holder's claim is taken over
    claim.release()
    claim.path.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    assert claim.acquire() == {"pid": 1, "host": "another-node"}  # another machine's claim is respected
    claim.path.write_text(json.dumps({"pid": 1, "host": "another-node", "slurm_task": "77_3", "slurm_restart": 0}))
    os.environ.update(SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3", SLURM_RESTART_COUNT="0")
    try:
        assert claim.acquire() is not None  # a sibling runner of the same try: respected
        os.environ["SLURM_RESTART_COUNT"] = "1"
        assert claim.acquire() is None  # the same SLURM array task, requeued elsewhere: its own claim
    finally:
        for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
            del os.environ[key]


def test_a_second_runner_skips_runs_the_first_holds(tmp_path):
    path, study = _tiny_study(tmp_path, seeds=(0,))
    held = study.specs()[0]
    blocker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = study.run_dir(held)
        folder.mkdir(parents=True)
        (folder / "claim.json").write_text(json.dumps({"pid": blocker.pid, "host": socket.gethostname()}))
        result = run_lightclf("study", "--config", str(path), "--jobs", "2", "--no-bench")
    finally:
        blocker.kill()
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run by pid {blocker.pid} on {socket.gethostname()}, skipped" in result.stderr
    assert not (study.run_dir(held) / "results.json").exists()  # never started twice
    assert json.loads((study.run_dir(study.specs()[1]) / "results.json").read_text())["status"] == "finished"


def test_slots_split_cores_or_spread_gpus(monkeypatch):
    # The cores this process may use (its affinity mask, as under taskset or a SLURM allocation), not
    # the machine's: 6 allowed of however many there are.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert [s.threads for s in plan_slots(2, None, threads=None)] == [3, 3]
    assert [s.threads for s in plan_slots(4, None, threads=None)] == [1, 1, 1, 1]
    slots = plan_slots(5, ["0", "1"])
    assert [s.device for s in slots] == ["0", "1", "0", "1", "0"]  # round-robin, several jobs per GPU
    env = slots[1].env()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and not any(k.startswith("SLURM_") for k in env)


def test_slurm_launcher_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    path, study = _tiny_study(tmp_path, seeds=(0,))
    result = run_lightclf(
        "study", "--config", str(path), "--launcher", "slurm", "--slurm-cluster", "local", "--wait",
        "--slurm-time", "10", "--slurm-parallelism", "2", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "submitted job array" in result.stderr
    assert finished_test_metrics(study)  # every run finished, in the study's own folders
    assert list((tmp_path / "runs" / "slurm" / "scale").glob("*_log.out"))  # submitit's logs in the study folder
    again = run_lightclf("study", "--config", str(path), "--launcher", "slurm", "--slurm-cluster", "local")
    assert "2 finished, 0 to submit" in again.stderr


def test_sweep_agent_runs_land_where_the_study_looks_and_a_retry_resumes(tmp_path):
    path, study = _tiny_study(tmp_path, seeds=(0,))
    spec = study.specs()[1]
    agent = {"WANDB_SWEEP_ID": "sweep1", "WANDB_RUN_ID": "agentrun1"}
    point = ("study", "--config", str(path), "--point", f"run={spec.run_id}", *ONE_THREAD)  # what the agent runs
    first = run_lightclf(*point, env=agent)
    assert first.returncode == 0, first.stderr[-3000:]
    link = study.run_dir(spec)
    assert link.is_symlink() and link.resolve().name == "agentrun1"
    assert study.record(spec).finished  # the runner, archive_run and report read it there
    # The agent retries the point (a new agent run id) after the run was interrupted: it resumes.
    results = link / "results.json"
    results.write_text(json.dumps({**json.loads(results.read_text()), "status": "interrupted"}))
    retry = run_lightclf(*point, env={**agent, "WANDB_RUN_ID": "agentrun2"})
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert "resuming from" in retry.stderr
    assert link.resolve().name == "agentrun2" and study.record(spec).finished


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "study --jobs must be >= 1, got 0"),
        (["--devices", "7"], "study --devices: GPU 7 not visible"),
        (["--devices", "a,b"], "study --devices: expected GPU indices"),
        (["--threads", "0"], "study --threads must be >= 1"),
        (["--launcher", "kubernetes"], "argument --launcher: invalid choice: 'kubernetes'"),
    ],
)
def test_study_bad_input_is_one_line_and_starts_nothing(tmp_path, capsys, args, message):
    from lightclf.cli import main

    path, study = _tiny_study(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--config", str(path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("lightclf: error: ")
    assert message in err[0]
    assert not (tmp_path / "runs").exists()


def test_slurm_without_submitit_is_one_line(tmp_path, capsys, monkeypatch):
    from lightclf.cli import main

    path, _ = _tiny_study(tmp_path)
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--config", str(path), "--launcher", "slurm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_info.value.code == 2
        and err[-1] == "lightclf: error: study --launcher slurm needs submitit: pip install submitit"
    )
    assert not (tmp_path / "runs").exists()


def test_a_time_limit_starts_no_run_that_cannot_finish(tmp_path):
    import time

    from lightclf.study.runner import run_study

    path, study = _tiny_study(tmp_path)
    lines: list[str] = []
    run_study(study, jobs=2, deadline=time.time() - 1, log=lines.append)  # a limit already reached
    assert any("time limit: 4 run(s) left for a later call (the study resumes)" in line for line in lines), lines
    assert not any(study.run_dir(spec).exists() for spec in study.specs())


def test_only_runs_trained_from_their_start_time_the_eta_and_the_time_limit(tmp_path, monkeypatch):
    """A run resumed near its end finishes in minutes; timed as a whole run it would shrink the ETA and
    let a time limit start a run that cannot finish (gpu-study --minutes). Fits are faked on a clock."""
    import lightclf.study.runner as runner
    from lightclf.runs import RunRecord

    path, study = _tiny_study(tmp_path)
    first, *_ = study.specs()
    RunRecord(folder=study.run_dir(first)).last_ckpt.parent.mkdir(parents=True)
    RunRecord(folder=study.run_dir(first)).last_ckpt.touch()  # stopped near its end earlier
    clock = [1_000.0]

    def fake_fit(study, spec, folder, slot, extra, log, label, echo=False):
        resumed = RunRecord.read(folder).resume_ckpt.exists()
        clock[0] += 60 if resumed else 3_600  # the rest of a run, or a whole one
        RunRecord(folder=folder).update(status="finished", test_metrics={"test/acc1": 0.5})
        return "ok"

    monkeypatch.setattr(runner, "run_one", fake_fit)
    monkeypatch.setattr(runner.time, "time", lambda: clock[0])
    lines: list[str] = []
    runner.run_study(study, jobs=1, log=lines.append, deadline=1_000.0 + 60 + 3_600 + 3_000)
    progress = [line for line in lines if line.startswith("study: ")]
    assert progress[1] == "study: 1 done, 0 running, 3 left"  # the resumed run: no whole-run time, no ETA
    assert progress[2] == "study: 2 done, 0 running, 2 left, ETA 2h00m"  # one whole run: 1 h each
    # 3,000 s were left for the third run: the whole run's hour says it cannot finish; the resumed
    # run's minute would have said it could.
    assert "time limit: 2 run(s) left for a later call (the study resumes)" in lines


def test_gpu_study_smoke_runs_the_prepared_path_on_the_cpu(tmp_path):
    """The GPU box's one command, on the CPU: two short fits, the img/s table, the report."""
    result = run_lightclf("gpu-study", "--smoke", "--out", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "fmnist_gpu"
    report = (out / "report.md").read_text()
    assert "2 of 79 planned runs finished" in report and "DDSNet w1.0 d2 vs GoogLeNet at 56 px" in report
    # GoogLeNet's peak LR is picked on validation once its runs are in; the smoke ran none.
    assert "| GoogLeNet peak LR (56 px) | 0.1 | 0 (-) | - | - | waiting for 0.2 (recipe), 0.1 |" in report
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted(r["label"] for r in runs) == ["ddsnet w1 28px d1", "ddsnet w1 28px d2 late"]
    bench = list(csv.DictReader((out / "gpu_train_bench.csv").open()))
    assert {(r["precision"], r["memory_format"]) for r in bench} == {
        (p, f) for p in ("32", "bf16-mixed") for f in ("contiguous", "channels_last")
    }
    assert len(list((out / "records").iterdir())) == 2  # archived records, as the GPU run will commit them


def test_gpu_study_runs_tuned_arms_with_their_picks(tmp_path, monkeypatch):
    """A tuned study (the claim pair, its picks committed) on the GPU path runs each arm at its pick,
    under the run ids the CPU study and the report use: the fits are captured, not run."""
    from conftest import REPO
    from lightclf.study import gpu

    monkeypatch.chdir(REPO)
    captured = []
    monkeypatch.setattr(gpu, "run_study", lambda study, extra, specs, **_: captured.extend(specs) or {})
    gpu.main(["--smoke", "--no-bench", "--config", "configs/study/fmnist_claim.yaml", "--out", str(tmp_path)])
    study = load_study("configs/study/fmnist_claim.yaml")
    picks = yaml.safe_load((REPO / "reports" / "fmnist_claim" / "picks.yaml").read_text())
    assert [spec.run_id for spec in captured] == [spec.run_id for spec in study.with_picks(study.specs())[0][:2]]
    lrs = {spec.name: spec.tuned["model.optimizer.init_args.lr"] for spec in captured}
    assert sorted(lrs.values()) == sorted(arm["params"]["model.optimizer.init_args.lr"] for arm in picks.values())
    for spec in captured:  # the fit's command line carries the pick
        args = spec.cli_args(study.base_config, study.save_dir, study.project)
        assert args[args.index("--model.optimizer.init_args.lr") + 1] == str(lrs[spec.name])


def test_sigterm_to_the_runner_stops_its_fits_and_starts_no_other(tmp_path):
    import signal
    import time

    from conftest import PYTHONPATH, REPO

    # Three runs on two slots: two start, and the third must never start after the signal.
    grid = {"network": ["ddsnet"], "small_input": [True], "width_multiplier": [0.25], "resolution": [24],
            "dilation": [2]}  # fmt: skip
    path, study = _tiny_study(tmp_path, seeds=(0, 1, 2), epochs=3, grid=grid)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": PYTHONPATH}
    runner = subprocess.Popen(
        [sys.executable, "-m", "lightclf", "study", "--config", str(path), "--jobs", "2", "--no-bench"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = [study.run_dir(spec) / "checkpoints" / "last.ckpt" for spec in study.specs()[:2]]  # epoch 0 done
    deadline = time.time() + 300
    while not all(p.exists() for p in first):  # both fits finished an epoch and train on
        assert runner.poll() is None and time.time() < deadline, runner.stderr.read()[-3000:]
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    runner.wait(timeout=180)
    err = runner.stderr.read()
    assert "retrying" not in err and "[3/3]" not in err, err[-3000:]
    statuses = {}
    for spec in study.specs()[:2]:
        statuses[spec.run_id] = json.loads((study.run_dir(spec) / "results.json").read_text())["status"]
    assert set(statuses.values()) <= {"interrupted", "finished"} and "interrupted" in statuses.values(), statuses
    assert not any(study.run_dir(spec).exists() for spec in study.specs()[2:])

    # The next call resumes what was interrupted (from its checkpoint, in the same run folder) and
    # runs the rest: a real resume of a stopped run, not of a finished one.
    again = run_lightclf("study", "--config", str(path), "--jobs", "2", "--no-bench")
    assert again.returncode == 0, again.stderr[-3000:]
    interrupted = [run_id for run_id, status in statuses.items() if status == "interrupted"]
    assert again.stderr.count("resuming from") == len(interrupted) and again.stderr.count("starting (") == 1
    for spec in study.specs():
        record = json.loads((study.run_dir(spec) / "results.json").read_text())
        assert record["status"] == "finished" and record["global_step"] == 12, (spec.run_id, record)
