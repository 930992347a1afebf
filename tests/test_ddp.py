"""Multi-device fits: two CPU processes (DDP over gloo) on this 2-core machine."""

from __future__ import annotations

import json

import pytest
from torch.utils.data import SequentialSampler

from conftest import run_lightclf, smoke_config
from lightclf.data import BatchIndexSampler, Digits, EpochSeededSampler, InMemorySplit
from lightclf.data.sampling import batch_sampler


def test_ranks_split_each_epoch_in_the_seeded_order():
    dataset = list(range(101))
    for epoch in (0, 1):
        single = EpochSeededSampler(dataset, seed=7, num_replicas=1, rank=0)
        ranks = [EpochSeededSampler(dataset, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        order = list(single)
        shares = [list(r) for r in ranks]
        assert shares[0] == order[0::2] and shares[1] == (order + order[:1])[1::2]  # interleaved, padded by one
        assert set(shares[0]) | set(shares[1]) == set(dataset) and len(shares[0]) == len(shares[1]) == 51
    first, second = (EpochSeededSampler(dataset, seed=7) for _ in range(2))
    second.set_epoch(1)
    assert list(first) != list(second)  # a new order every epoch


def test_batches_are_the_per_sample_order_cut_in_batches_and_eval_shares_are_unpadded():
    import torch

    split = InMemorySplit(torch.arange(101, dtype=torch.uint8).view(101, 1, 1, 1), torch.arange(101))
    per_sample = list(EpochSeededSampler(split, seed=3, num_replicas=2, rank=1))
    batches = list(BatchIndexSampler(split, 8, shuffle=True, seed=3, num_replicas=2, rank=1))
    assert [b.tolist() for b in batches] == [per_sample[i : i + 8] for i in range(0, 48, 8)]  # 51 -> 6 full batches
    images, labels = split[batches[0]]
    assert images.flatten().tolist() == labels.tolist() == per_sample[:8]  # one gather per batch
    # Evaluation: contiguous, unpadded shares that cover every image exactly once.
    shares = [torch.cat(list(BatchIndexSampler(split, 8, shuffle=False, num_replicas=2, rank=r))) for r in (0, 1)]
    assert torch.cat(shares).tolist() == list(range(101)) and [len(s) for s in shares] == [50, 51]
    assert len(BatchIndexSampler(split, 8, shuffle=False, num_replicas=2, rank=1)) == 7
    # Training under overfit_batches: the split's own order, sharded and padded as training is, so
    # every rank steps equally often (evaluation's shares would give ranks 6 and 7 batches: a hang).
    ordered = [list(batch_sampler(split, 8, train=True, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [b.tolist() for b in ordered[1]] == [list(range(1, 96, 2))[i : i + 8] for i in range(0, 48, 8)]
    assert len(ordered[0]) == len(ordered[1]) == 6
    assert isinstance(batch_sampler(split, 8, train=True, shuffle=False), SequentialSampler)  # Lightning keeps it
    assert not isinstance(batch_sampler(split, 8, train=True, shuffle=True), SequentialSampler)


def test_augmentation_draws_differ_per_rank_and_rank_zero_draws_the_single_process_pattern():
    from types import SimpleNamespace

    import torch

    data = Digits(resolution=16, augment=True, crop_padding=2)
    x = torch.randn(16, 3, 16, 16)
    single = data.augment_batch(x, step=5)
    data.trainer = SimpleNamespace(global_rank=0)
    rank0 = data.augment_batch(x, step=5)
    data.trainer = SimpleNamespace(global_rank=1)
    rank1 = data.augment_batch(x, step=5)
    assert torch.equal(single, rank0) and not torch.equal(rank0, rank1)


def test_ddp_fit_on_two_cpu_processes(tmp_path):
    overrides = {
        "trainer.devices": 2,
        "trainer.strategy": "ddp",
        "trainer.accelerator": "cpu",
        # Trained long enough that predictions vary (near chance, a rank-0-only figure could
        # match the synced one by luck): 6 epochs x 15 steps per rank.
        "trainer.max_epochs": 6,
        "trainer.limit_train_batches": 15,
        "trainer.limit_val_batches": 1.0,
        "trainer.limit_test_batches": 1.0,
        # 449 test images: an odd count, so a padded share would count one image twice.
        "data.init_args.test_fraction": 0.25,
    }
    config = smoke_config(tmp_path, **overrides)
    # The real recipe on top: SGD-Nesterov, one-cycle, label smoothing, flips, EMA and flip TTA
    # (DDP with EMA once crashed deep-copying the module).
    fast = ("--config", "configs/recipes/fast.yaml")
    result = run_lightclf("fit", "--config", str(config), *fast, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()  # one run folder, written by rank 0 only
    record = json.loads((folder / "results.json").read_text())
    assert record["status"] == "finished" and record["global_step"] == 90  # 15 steps x 6 epochs, per rank
    assert record["test_metrics"]["test/acc1"] > 0.3  # a trained net (chance is 0.1)
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 1  # one W&B run
    checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2  # best + last, once
    assert not list((folder / "checkpoints").glob("*.partial"))

    # The synced test metric equals a single-process test of the same checkpoint.
    single = run_lightclf(
        "test", "--config", str(config), *fast, "--trainer.devices", "1", "--trainer.strategy", "auto",
        "--ckpt_path", record["best_ckpt"],
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    (tested,) = [p for p in (tmp_path / "runs" / "smoke").iterdir() if p != folder]  # the test's own run
    again = json.loads((tested / "results.json").read_text())["test_metrics"]
    assert again["test/acc1"] == pytest.approx(record["test_metrics"]["test/acc1"], abs=1e-6)


def test_sigterm_to_every_ddp_rank_stops_all_and_resumes(tmp_path):
    """What SLURM does on preemption: SIGTERM to every rank. Every rank stops at the same step, the
    partial epoch is saved once, the record says interrupted, and the fit resumes to the end."""
    import contextlib
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import PYTHONPATH, REPO, SMOKE_CALLBACKS

    marker = tmp_path / "kill-point"
    pause = {"class_path": "kill_points.PauseAtStep", "init_args": {"step": 20, "marker": str(marker)}}
    overrides = {
        "trainer.devices": 2, "trainer.strategy": "ddp", "trainer.accelerator": "cpu",
        "trainer.max_epochs": 3, "trainer.limit_train_batches": 12,
        "trainer.callbacks": [*SMOKE_CALLBACKS, pause],
    }  # fmt: skip
    config = smoke_config(tmp_path, **overrides)
    # Started cold (not forked from the suite's warm server): the test signals each rank by its pid,
    # so rank 1 must be rank 0's child, as Lightning's launcher makes it.
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": PYTHONPATH, "LIGHTCLF_WARM_FITS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightclf", "fit", "--config", str(config), "--config", "configs/recipes/fast.yaml"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        children = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(proc.pid)], capture_output=True, text=True)
        # Rank 1 reruns rank 0's command line (Lightning's subprocess launcher); other children (a
        # compiler building the C++ kernel, W&B's service) are not ranks.
        ranks = [proc.pid] + [
            int(line.split()[0])
            for line in children.stdout.splitlines()
            if re.search(r" -m lightclf(\.__main__)? fit ", line)
        ]
        assert len(ranks) == 2, f"rank 1 is rank 0's child under Lightning's subprocess launcher:\n{children.stdout}"
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)
        marker.with_suffix(".release").touch()  # both ranks finish the paused batch, then agree to stop
        try:
            proc.wait(timeout=300)  # it once hung here forever; the bound only detects a hang
        except subprocess.TimeoutExpired:
            pytest.fail("rank 0 hung after SIGTERM")
        err = proc.stderr.read()
        assert proc.returncode == 143, err[-3000:]
        # One resume line for the job (rank 0's; rank 1 shares the stderr), naming the file the stop wrote.
        assert err.count("lightclf: interrupted by SIGTERM") == 1, err[-3000:]
        assert "/checkpoints/interrupted.ckpt" in err.split("lightclf: interrupted by SIGTERM")[1].splitlines()[0]
        deadline = time.monotonic() + 300
        for pid in ranks[1:]:  # rank 1 ends too (gone, or a zombie awaiting its reaper)
            while _alive(pid):
                assert time.monotonic() < deadline, f"rank process {pid} hung after SIGTERM"
                time.sleep(0.2)
    finally:  # a failed assertion must not leave ranks (or W&B's service) running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    record = json.loads((folder / "results.json").read_text())
    assert record["status"] == "interrupted"
    assert [p.name for p in (folder / "checkpoints").glob("interrupted*.ckpt")] == ["interrupted.ckpt"]  # once

    resumed = run_lightclf(
        "fit", "--config", str(config), "--config", "configs/recipes/fast.yaml",
        "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"), timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((folder / "results.json").read_text())
    assert final["status"] == "finished" and final["global_step"] == 36  # 12 steps x 3 epochs, per rank


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(line for line in fh if line.startswith("State:")).split()[1] != "Z"
    except FileNotFoundError:
        return False
