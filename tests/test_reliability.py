"""Interrupted runs resume exactly; bad input fails with one line; nothing trained is lost."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PYTHONPATH, REPO, SMOKE_CALLBACKS, run_lightclf, smoke_config
from lightclf.runs import RunRecord
from lightclf.study.execution import progress_note
from lightclf.study.wandb_records import read_run
from lightclf.training.run_folder import devices_so_far
from lightclf.training.wandb_env import choose_wandb_mode

# 3 epochs of 8 steps: a kill inside epoch 2 leaves one finished epoch (the checkpoint), a partial
# one (the history past it) and one still to run after the resume, as 5 epochs of 16 did at 3x the CPU.
RESUME_OVERRIDES = {
    "trainer.max_epochs": 3,
    "trainer.limit_train_batches": 8,
    "trainer.limit_val_batches": 2,
    "trainer.deterministic": True,
    "test_after_fit": True,
}
WIDE = {"width_multiplier": 0.25, "small_input": True}
# The fast recipe's stochastic and stateful parts: per-sample augmentation, mixup, dropout (torch's
# global generator), a per-step schedule and an EMA of the weights must all resume exactly too.
FAST = {
    "model.network_kwargs": {**WIDE, "drop_rate": 0.2},
    "data.init_args.augment": True,
    "model.mixup_alpha": 0.2,
    "model.ema_decay": 0.9,
    "model.tta_flip": True,
    "model.optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003, "weight_decay": 0.05}},
    "model.lr_schedule": {"class_path": "lightclf.training.schedules.OneCycle", "init_args": {"pct_start": 0.3}},
}


def _start_fit(config: Path, *extra: str) -> subprocess.Popen:
    """A real process, not a fork of the suite's warm server (tests/warm_fits.py), whose worker a
    SIGKILL to the client ends a moment later instead of at once; its Ctrl-C is live (pytest-xdist's
    workers ignore SIGINT, and a process started with SIGINT ignored keeps ignoring it)."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": PYTHONPATH,
        "LIGHTCLF_WARM_FITS": "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lightclf", "fit", "--config", str(config), *extra],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_marker(marker: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "fit never reached the kill point"
        time.sleep(0.05)


def _wait_for_logged_step(wandb_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the fit's offline W&B log holds ``step`` (it flushes about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        segment = next(wandb_dir.glob("offline-run-*/run-*.wandb"), None)
        history = read_run(segment)["history"] if segment else []
        if any(row.get("trainer/global_step", -1) >= step for row in history if "train/loss" in row):
            return
        assert proc.poll() is None and time.monotonic() < deadline, "W&B never logged the steps before the kill point"
        time.sleep(0.2)


def _final(run_folder: Path) -> dict:
    return json.loads((run_folder / "results.json").read_text())


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> dict:
    """The uninterrupted run of the fast recipe, trained once per test process: session-scoped, since
    the suite's schedule (tests/scheduling.py) interleaves files, and a module fixture is torn down
    and trained again whenever a test of another file runs between its users."""
    tmp = tmp_path_factory.mktemp("reference")
    config = smoke_config(tmp, network_kwargs=WIDE, **RESUME_OVERRIDES, **FAST)
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = (tmp / "runs" / "smoke").iterdir()
    return _final(folder)


# Both stop the fast recipe (every stateful part) and resume mid-epoch, so the loader's place in the
# epoch and the random states must travel in the checkpoint; resuming from an epoch's end is what
# the study tests do.
# - A Ctrl-C (SIGINT) in epoch 2's last batch (step 15): the stop waits for that epoch's validation
#   and the next batch, then keeps interrupted.ckpt (step 17), EMA update included.
# - A SIGKILL before step 11 (3 of the 8 steps of epoch 2): no chance to save; a timed last.ckpt,
#   rewritten after every batch here, holds step 11.
@pytest.mark.parametrize(
    "sig, kill_step, resume_step",
    [(signal.SIGINT, 15, 17), (signal.SIGKILL, 11, 11)],
    ids=["ctrl-c", "sigkill"],
)
def test_stopped_fit_resumes_exactly(tmp_path, reference_run, sig, kill_step, resume_step):
    marker = tmp_path / "kill-point"  # a test callback pauses before batch kill_step until released
    pause = {"class_path": "kill_points.PauseAtStep", "init_args": {"step": kill_step, "marker": str(marker)}}
    callbacks = [*SMOKE_CALLBACKS, pause]
    if sig == signal.SIGKILL:
        callbacks.append({"class_path": "lightclf.training.resume.LastCheckpoint", "init_args": {"every_minutes": 0}})
    config = smoke_config(tmp_path, network_kwargs=WIDE, **RESUME_OVERRIDES, **FAST, **{"trainer.callbacks": callbacks})
    run_root = tmp_path / "runs" / "smoke"
    proc = _start_fit(config)
    _wait_for_marker(marker, proc)
    _wait_for_logged_step(tmp_path / "runs" / "wandb", kill_step - 1, proc)  # W&B has the steps before it
    assert proc.poll() is None, "the fit ended before it could be stopped"
    proc.send_signal(sig)
    marker.with_suffix(".release").touch()
    proc.wait(timeout=300)

    (folder,) = run_root.iterdir()
    checkpoints = folder / "checkpoints"
    # Without a timed rewrite (the default's 10 minutes are far off) last.ckpt is the last epoch's end.
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == (
        11 if sig == signal.SIGKILL else 16
    )
    killed_segment = read_run(next((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")))
    logged = max(row["trainer/global_step"] for row in killed_segment["history"] if "train/loss" in row)
    assert logged == (10 if sig == signal.SIGKILL else 15)
    record = _final(folder)
    resume_from = checkpoints / "last.ckpt"
    if sig == signal.SIGINT:  # graceful: recorded, the partial epoch kept aside, one line naming it
        assert proc.returncode == 130 and record["status"] == "interrupted"
        assert [e["epoch"] for e in record["val_per_epoch"]] == [0, 1]  # epoch 2's validation ran first
        resume_from = checkpoints / "interrupted.ckpt"
        err = proc.stderr.read()
        assert "stopping at the end of this batch (Ctrl-C again to stop at once)" in err
        assert err.strip().splitlines()[-1] == f"lightclf: interrupted by Ctrl-C; resume with --ckpt_path {resume_from}"
    else:
        assert proc.returncode == -signal.SIGKILL and record["status"] == "running"
    assert torch.load(resume_from, weights_only=False)["global_step"] == resume_step
    # Where that checkpoint lies, as the study's resume line tells it (8 batches an epoch).
    saved = RunRecord.read(folder).saved
    assert (saved.epoch, saved.batches_done, saved.epoch_batches, saved.global_step) == (
        resume_step // 8, resume_step % 8, 8, resume_step
    )  # fmt: skip
    assert progress_note(RunRecord.read(folder)).startswith(
        f" ({resume_step // 8} of 3 epochs and {resume_step % 8}/8 batches of epoch {resume_step // 8 + 1} done, "
    )

    first_device = record["device"]
    resumed = run_lightclf("fit", "--config", str(config), "--ckpt_path", str(resume_from))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [p.name for p in run_root.iterdir()] == [folder.name]  # same run folder, no duplicate
    final = _final(folder)
    # The resumed fit adds its device to the first's, never replaces it (a run moved to a GPU says so).
    assert final["device"] == first_device or final["device"].startswith(f"{first_device}, then ")
    assert [devices_so_far(*pair) for pair in ((None, "A"), ("A", "A"), ("A", "B"), ("A, then B", "B"), ("A, then B", "A"))] == [
        "A", "A", "A, then B", "A, then B", "A, then B, then A"
    ]  # fmt: skip
    # Exact: the same validation loss after the last epoch, and the same test of the best checkpoint.
    assert final["status"] == "finished" and final["global_step"] == reference_run["global_step"] == 24
    assert final["fit_metrics"]["val/loss"] == pytest.approx(reference_run["fit_metrics"]["val/loss"], abs=1e-6)
    for key in ("test/acc1", "test/loss"):
        assert final["test_metrics"][key] == pytest.approx(reference_run["test_metrics"][key], abs=1e-6)

    # W&B: both segments belong to one run id; together they hold every training step but the row of
    # the batch a graceful stop came after: it trained (the checkpoint has it), and the stop comes at
    # its end, before Lightning logs it.
    segments = [read_run(p) for p in sorted((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert {s["id"] for s in segments} == {folder.name} and len(segments) == 2
    steps = {row["trainer/global_step"] for s in segments for row in s["history"] if "train/loss" in row}
    assert steps == set(range(24)) - ({16} if sig == signal.SIGINT else set())
    assert "test/acc1" in segments[-1]["summary"]


def test_nan_loss_stops_with_a_message(tmp_path):
    config = smoke_config(tmp_path, **{"model.optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 1e30}}})
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lightclf: error: training loss is") and "lower the learning rate" in last
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    assert _final(folder)["status"] == "failed"


def test_no_disk_space_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys):
    import lightning.fabric.plugins.io.torch_io as torch_io

    from lightclf.cli import main

    monkeypatch.chdir(REPO)
    config = smoke_config(tmp_path, **{"trainer.max_epochs": 3, "trainer.limit_train_batches": 3})
    real_save, calls = torch_io._atomic_save, []

    def save_then_fill_disk(checkpoint, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 0 wrote best + last; the disk is full afterwards (epoch 1's last)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(checkpoint, path)

    monkeypatch.setattr(torch_io, "_atomic_save", save_then_fill_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 2
    assert "no space left on device" in capsys.readouterr().err.strip().splitlines()[-1]
    # The failed fit ended its W&B run: the next fit in this process must not adopt it (and its id,
    # and so its run folder), as Lightning's WandbLogger does with a run still in progress.
    assert sys.modules["wandb"].run is None
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    kept = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in kept
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0  # epoch 0s, intact


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fashion_config(tmp_path: Path, data_dir: Path) -> Path:
    return smoke_config(
        tmp_path,
        **{
            "data": {
                "class_path": "lightclf.data.FashionMNIST",
                "init_args": {"data_dir": str(data_dir), "resolution": 28},
            }
        },
    )


@pytest.mark.parametrize("case", ["missing", "empty", "labels", "truncated"])
def test_bad_data_dir_fails_with_one_line(tmp_path, case, run_here):
    data_dir = tmp_path / "fmnist"
    if case != "missing":
        data_dir.mkdir()
    if case in ("labels", "truncated"):
        for prefix, n in (("train", 64), ("t10k", 16)):
            _write_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
            labels = np.arange(n) % 10
            if case == "labels":
                labels[3] = 12
            _write_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz", labels)
        if case == "truncated":
            raw = gzip.open(data_dir / "train-images-idx3-ubyte.gz").read()
            with gzip.open(data_dir / "train-images-idx3-ubyte.gz", "wb") as fh:
                fh.write(raw[: len(raw) // 2])
    result = run_here("fit", "--config", str(_fashion_config(tmp_path, data_dir)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    expected = {
        "missing": "does not exist",
        "empty": "IDX files not found in data.data_dir",
        "labels": "labels outside [0, 10)",
        "truncated": "is truncated",
    }[case]
    assert last.startswith("lightclf: error:") and expected in last, last


def test_corrupt_image_in_image_folder_is_skipped_with_warning(tmp_path):
    from PIL import Image

    root = tmp_path / "folder" / "train"
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            shade = 40 if label == "cats" else 200
            pixels = np.clip(rng.normal(shade, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = smoke_config(
        tmp_path,
        **{
            "data": {
                "class_path": "lightclf.data.ImageFolder",
                "init_args": {
                    "data_dir": str(tmp_path / "folder"),
                    "resolution": 32,
                    "batch_size": 8,
                    "val_fraction": 0.25,
                },
            },
            "trainer.limit_train_batches": 3,
        },
    )
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipping unreadable image" in result.stderr and "broken.png" in result.stderr
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    assert _final(folder)["status"] == "finished"


def test_checkpoint_from_another_network_is_refused(tmp_path, trained_checkpoint, run_here):
    config = smoke_config(tmp_path, network="ddsnet_nodilation")
    result = run_here("test", "--config", str(config), "--ckpt_path", str(trained_checkpoint))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "holds model.network='ddsnet' but the config asks for 'ddsnet_nodilation'" in last


def test_unreadable_checkpoint_is_refused(tmp_path, run_here):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    result = run_here("fit", "--config", str(smoke_config(tmp_path)), "--ckpt_path", str(bogus))
    assert result.returncode == 2 and "is not a readable checkpoint" in result.stderr.strip().splitlines()[-1]


def test_wandb_modes(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    mode, notice = choose_wandb_mode()
    assert mode == "offline" and "no W&B API key" in notice and "wandb sync" in notice
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://10.255.255.1:9")  # unroutable: only the timeout ends the wait
    mode, notice = choose_wandb_mode(timeout_s=1.0)  # without the timeout this would not return
    assert mode == "offline" and "unreachable" in notice
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_wandb_mode() == ("disabled", None)


def test_fit_with_key_but_unreachable_server_goes_offline(tmp_path):
    # WANDB_MODE empty is unset to lightclf: the choice is its own (key, then the server's reachability).
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_MODE": ""}
    config = smoke_config(tmp_path, **{"trainer.max_epochs": 1, "trainer.limit_train_batches": 2})
    result = run_lightclf("fit", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W&B server unreachable" in result.stderr
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*"))


def test_nan_loss_after_an_epoch_keeps_that_epochs_checkpoints(tmp_path):
    poison = {"class_path": "kill_points.PoisonAtStep", "init_args": {"step": 14}}
    config = smoke_config(tmp_path, **{"trainer.max_epochs": 3, "trainer.limit_train_batches": 6,
                                       "trainer.callbacks": [*SMOKE_CALLBACKS, poison]})  # fmt: skip
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 2 and "lightclf: error: training loss is nan at step 14" in result.stderr
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12  # epoch 1's, written before the NaN, and intact:
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert _final(folder)["status"] == "failed"


def test_study_cli_emits_sweeps_and_runs_points(tmp_path, capsys):
    import yaml

    from lightclf.cli import main
    from lightclf.study.spec import load_study

    base = smoke_config(tmp_path)
    study_yaml = tmp_path / "s.yaml"
    study_yaml.write_text(yaml.safe_dump({
        "name": "pts", "base_config": str(base), "save_dir": str(tmp_path / "runs"), "seeds": [0, 1],
        "grid": {"network": ["ddsnet"], "small_input": [True], "width_multiplier": [0.25], "resolution": [32],
                 "dilation": [1, 2]},
    }))  # fmt: skip
    study = load_study(study_yaml)
    main(["study", "--config", str(study_yaml), "--emit-sweep", str(tmp_path / "sweep.yaml")])
    sweep = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert sweep["parameters"]["run"]["values"] == [s.run_id for s in study.specs()]
    capsys.readouterr()
    main(["study", "--config", str(study_yaml), "--point", "dilation=2", "--dry-run"])
    err = capsys.readouterr().err
    assert err.count("python -m lightclf fit") == 2 and "d2-s0" in err and "d1-s" not in err
    args = study.specs()[3].cli_args(study.base_config, study.save_dir, study.project)
    assert args[args.index("--trainer.logger.init_args.group") + 1] == "pts"
    assert args[args.index("--trainer.logger.init_args.id") + 1] == study.specs()[3].run_id
    assert json.loads(args[args.index("--trainer.logger.init_args.tags") + 1]) == [
        "pts", "ddsnet", "width_multiplier=0.25", "resolution=32", "dilation=2"
    ]  # fmt: skip


def test_a_checkpoint_write_that_fails_midway_keeps_the_earlier_file(tmp_path, monkeypatch):
    """Lightning's checkpoint IO (every fit's) writes through an fsspec transaction: a write that
    fails halfway (a full disk) leaves the earlier last.ckpt whole and no temporary file behind."""
    from fsspec.implementations import local
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    io, path = TorchCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 32, "weights": torch.zeros(10_000)}, path)
    write = local.LocalFileOpener.write

    def half_then_full_disk(self, data):
        write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local.LocalFileOpener, "write", half_then_full_disk)
    with pytest.raises(OSError):
        io.save_checkpoint({"global_step": 48, "weights": torch.ones(10_000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["global_step"] == 32
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_ctrl_c_exits_130_with_the_resume_hint(run_here, monkeypatch):
    """Ctrl-C in any command: exit status 130 (the shell's convention) and one line saying how to resume."""
    import lightclf.cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(lightclf.cli.COMMANDS, "bench", interrupted)
    monkeypatch.setitem(lightclf.cli.COMMANDS, "study", interrupted)
    result = run_here("bench")
    assert result.returncode == 130
    assert result.stderr.strip() == "lightclf: interrupted by Ctrl-C"  # nothing to resume
    result = run_here("study")
    assert result.returncode == 130
    assert result.stderr.strip() == "lightclf: interrupted by Ctrl-C; run `lightclf study ...` again to resume"


def test_a_resumed_loader_yields_the_rest_of_its_epoch_and_leaves_the_global_generator_alone():
    from lightclf.data import BatchIndexSampler, EpochSeededSampler, InMemorySplit, ResumableLoader

    split = InMemorySplit(torch.arange(101, dtype=torch.uint8).view(101, 1, 1, 1), torch.arange(101))
    trained = {"batches": 0}  # what the trainer's restored loop state would say
    done = lambda: trained["batches"]  # noqa: E731
    in_memory = ResumableLoader(
        split, batch_size=None, sampler=BatchIndexSampler(split, 8, True, seed=3), batches_done=done
    )
    per_sample = ResumableLoader(
        split, batch_size=8, drop_last=True, sampler=EpochSeededSampler(split, seed=3), batches_done=done
    )  # ImageFolder's kind: its sampler counts images, not batches
    for loader in (in_memory, per_sample):
        loader.sampler.set_epoch(2)
        trained["batches"] = 0
        generator = torch.get_rng_state()
        whole = [labels.flatten().tolist() for _, labels in loader]
        assert torch.equal(torch.get_rng_state(), generator)  # dropout's generator: no draw for the iterator
        trained["batches"] = 5
        rest = [labels.flatten().tolist() for _, labels in loader]
        assert len(whole) == 12 and rest == whole[5:]


def test_image_folder_crops_do_not_depend_on_the_workers_and_a_resumed_epoch_repeats_them(tmp_path, monkeypatch):
    """ImageFolder's per-sample crop and flip draw from a generator seeded per image and epoch
    (SeededDraws): the same crops with 0 or 2 decoding workers, and a loader resumed after a batch
    yields the rest of the epoch's batches exactly, crops included."""
    from PIL import Image
    from skimage import data as photos

    from lightclf.data import ImageFolder

    for label, photo in (("cat", photos.chelsea()), ("cup", photos.coffee())):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(photo[i * 20 :]).save(tmp_path / "train" / label / f"{i}.png")

    def epoch_batches(workers: int, done: int = 0) -> list[torch.Tensor]:
        module = ImageFolder(
            data_dir=str(tmp_path), resolution=16, batch_size=2, val_fraction=0.25, num_workers=workers
        )
        module.setup("fit")
        module.batches_done_in_epoch = lambda: done  # what a resumed trainer's loop state says
        loader = module.train_dataloader()
        loader.sampler.set_epoch(3)
        return [images for images, _ in loader]

    def no_gpu_seeding(seed):  # torch.manual_seed would reseed (and leave reseeded) dropout's GPU generator
        raise AssertionError("a crop's seed reached the GPU generators")

    with monkeypatch.context() as patched:  # decoding in this process (workers seed their own at start)
        patched.setattr(torch.cuda, "manual_seed_all", no_gpu_seeding)
        alone = epoch_batches(0)
    assert len(alone) == 3 and not torch.equal(alone[0][0], alone[0][1])
    assert all(torch.equal(a, b) for a, b in zip(alone, epoch_batches(2), strict=True))  # same crops, 2 workers
    rest = epoch_batches(2, done=1)
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(alone[1:], rest, strict=True))
