"""The GPU and multi-process branches, forced on a CPU machine with stand-ins that behave as a GPU or a
DDP job would (a compiled net reusing its output buffer, per-device event queues, a restricted
CUDA_VISIBLE_DEVICES, several ranks and fits sharing the cores, a clock the test advances)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from conftest import PYTHONPATH, REPO, SMOKE_CALLBACKS, smoke_config
from lightclf.devices import host_read_every, loader_workers, visible_gpus_for_children
from lightclf.measure.device import DeviceTimer, available_flops, table_flops
from lightclf.training.module import ImageClassifier
from lightclf.training.throughput import TrainThroughput


# -- 1. flip TTA under CUDA graphs -------------------------------------------------------------------
class ReusesOutputBuffer(nn.Module):
    """What a CUDA-graph compiled module does: every call writes its result into one static buffer and
    returns that buffer, so the next call overwrites what the previous one returned."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.buffer = inner, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.buffer is None or self.buffer.shape != out.shape:
            self.buffer = torch.empty_like(out)
        self.buffer.copy_(out)
        return self.buffer


def test_flip_tta_is_right_when_the_compiled_net_reuses_its_output_buffer():
    torch.manual_seed(0)
    module = ImageClassifier("ddsnet", {"width_multiplier": 0.25, "small_input": True}, img_size=32, tta_flip=True)
    module.channels_last = False
    module.eval()
    module.network.get_classifier().weight.data.mul_(1000)  # logits of a size a tolerance can tell apart
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (module.network(x) + module.network(x.flip(-1))) / 2
        module.network = ReusesOutputBuffer(module.network)
        got = module.eval_logits(x, "test")
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(expected, module.network.inner(x.flip(-1)), atol=1e-3)  # the two halves differ


# -- 2. a NaN on one DDP rank stops every rank -------------------------------------------------------
def test_host_reads_are_windowed_off_one_cpu_process():
    assert host_read_every("cpu", 1) == 1
    assert host_read_every("cpu", 2) == host_read_every("cuda", 1) == 25


def test_nan_on_one_ddp_rank_stops_both_with_one_error_and_keeps_the_checkpoint(tmp_path):
    poison = {"class_path": "kill_points.PoisonAtStep", "init_args": {"step": 14, "rank": 1}}
    config = smoke_config(
        tmp_path,
        **{
            "trainer.devices": 2, "trainer.strategy": "ddp", "trainer.accelerator": "cpu",
            "trainer.max_epochs": 3, "trainer.limit_train_batches": 12, "trainer.callbacks": [*SMOKE_CALLBACKS, poison],
        },
    )  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": PYTHONPATH}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightclf", "fit", "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        try:
            _, err = proc.communicate(timeout=300)  # before the fix rank 0 waited in the next all-reduce forever
        except subprocess.TimeoutExpired:
            pytest.fail("a NaN on rank 1 alone hung the job")
        assert proc.returncode == 2, err[-3000:]
        errors = [line for line in err.splitlines() if line.startswith("lightclf: error:")]
        assert errors and all("training loss became NaN/inf" in line for line in errors), err[-3000:]
        assert "before step 23 on " in errors[0] and " of 2 ranks" in errors[0]  # the window and how many ranks saw it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12  # the first epoch's checkpoint, intact
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


# -- 3. GPU selection under a parent's CUDA_VISIBLE_DEVICES ------------------------------------------
def test_visible_gpus_respect_a_parents_restriction():
    slurm = {"CUDA_VISIBLE_DEVICES": "2,3"}  # a SLURM allocation of GPUs 2 and 3: this process sees 2 GPUs
    assert visible_gpus_for_children(None, 2, slurm) == ["2", "3"]  # not re-mapped onto 0,1
    assert visible_gpus_for_children("1", 2, slurm) == ["3"]
    assert visible_gpus_for_children(None, 2, {}) == ["0", "1"]
    assert visible_gpus_for_children(None, 0, slurm) is None and visible_gpus_for_children("cpu", 2, {}) is None
    with pytest.raises(Exception, match="GPU 2 not visible"):
        visible_gpus_for_children("2", 2, slurm)


def test_study_slots_carry_the_parents_gpu_ids(monkeypatch):
    from lightclf.study.execution import plan_slots, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    slots = plan_slots(4, visible_gpus(None))
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "3", "2", "3"]


# -- 4 and 7. CUDA events on the measured device; this process's own peak memory ---------------------
class FakeCuda:
    """Records which device each stream, event, sync and memory reading was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.stream = None

            def record(self, stream=None) -> None:
                fake.calls.append(("record", stream))
                self.stream = stream

            def synchronize(self) -> None:
                fake.calls.append(("event-sync", self.stream))

            def elapsed_time(self, other) -> float:
                return 40.0

        self.Event = Event

    def current_stream(self, device):
        self.calls.append(("stream", device))
        return f"stream of {device}"

    def synchronize(self, device=None):
        self.calls.append(("sync", device))

    def reset_peak_memory_stats(self, device=None):
        self.calls.append(("reset", device))

    def max_memory_allocated(self, device=None):
        self.calls.append(("peak", device))
        return 123_000_000

    def mem_get_info(self, device=None):  # device-wide: would count sibling processes
        raise AssertionError("the device-wide reading was used")


def test_cuda_timer_records_on_the_measured_devices_stream_and_reads_this_process_peak():
    fake = FakeCuda()
    device = torch.device("cuda", 1)
    timer = DeviceTimer(device, backend=fake)
    assert timer.seconds(lambda: None, iters=4) == pytest.approx(0.01)  # 40 ms over 4 calls
    records = [stream for kind, stream in fake.calls if kind == "record"]
    assert records == ["stream of cuda:1", "stream of cuda:1"]  # not the current device's (cuda:0) queue
    assert ("sync", device) in fake.calls and ("stream", device) in fake.calls
    timer.reset_peak_memory()
    assert timer.peak_memory_mb() == 123.0
    assert ("reset", device) in fake.calls and ("peak", device) in fake.calls


# -- 5. MFU where Lightning lacks the chip ---------------------------------------------------------------
@pytest.mark.parametrize(
    "name, bf16, fp32",
    [
        ("NVIDIA H200", 989.4e12, 66.9e12),
        ("NVIDIA H100 80GB HBM3", 989.4e12, 66.9e12),
        ("NVIDIA H100 PCIe", 756.5e12, 51.2e12),
        ("NVIDIA A100-SXM4-80GB", 312e12, 19.5e12),
        ("NVIDIA L40S", 362.05e12, 91.6e12),
        ("NVIDIA L4", 121e12, 30.3e12),
    ],
)
def test_peak_flops_table_by_device_name(name, bf16, fp32):
    assert table_flops(name, "bf16-mixed", tf32=True) == int(bf16)
    assert table_flops(name, "32", tf32=False) == int(fp32)
    assert table_flops("NVIDIA GeForce GTX 1080", "bf16-mixed", tf32=True) is None
    assert table_flops("NVIDIA RTX A1000", "bf16-mixed", tf32=True) is None  # not an A100
    assert table_flops("NVIDIA H200 NVL", "bf16-mixed", tf32=True) is None  # other clocks: no guess


def test_available_flops_falls_back_to_the_table(monkeypatch):
    import lightning.fabric.utilities.throughput as throughput

    monkeypatch.setattr(throughput, "get_available_flops", lambda device, dtype: None)  # Lightning lacks it
    assert available_flops(torch.device("cuda", 0), "bf16-mixed", device_name="NVIDIA H200") == int(989.4e12)
    assert available_flops(torch.device("cpu"), "bf16-mixed") is None


# -- 6. the GPU study is seeded, not bit-deterministic ---------------------------------------------------
def test_gpu_study_config_is_seeded_not_deterministic():
    config = yaml.safe_load((REPO / "configs/study/fmnist_gpu_base.yaml").read_text())
    # deterministic: warn fills every new tensor with NaN (torch.utils.deterministic.fill_uninitialized_memory)
    # and picks slow kernels; the study needs seeded runs, which seed_everything gives.
    assert config["trainer"]["deterministic"] is False and config["seed_everything"] == 0


# -- 8. throughput over whole windows, data wait included -------------------------------------------------
def test_throughput_counts_whole_windows_with_the_data_wait():
    now = [100.0]
    callback = TrainThroughput(window_size=4, clock=lambda: now[0], sync=lambda device: None)
    logged: list[dict] = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append(metrics))
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), loggers=[logger], is_global_zero=True,
        global_step=0, callback_metrics={}, training=True, sanity_checking=False,
    )  # fmt: skip
    module = SimpleNamespace(flops_per_batch=1000)
    batch = (torch.zeros(32, 1, 2, 2), torch.zeros(32))
    callback.on_train_epoch_start(trainer, module)
    for _ in range(8):
        now[0] += 0.02  # waiting for the batch's data
        now[0] += 0.08  # the step itself
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    assert len(logged) == 2
    for metrics in logged:  # 4 batches of 32 images in 0.4 s of wall time, the data wait included
        assert metrics["train/device/samples_per_sec"] == pytest.approx(320.0)
        assert metrics["train/device/flops_per_sec"] == pytest.approx(4 * 1000 / 0.4)
    assert float(trainer.callback_metrics["train/device/samples_per_sec"]) == pytest.approx(320.0)
    # A short last window is logged at the epoch's end; a fit resumed mid-epoch (no epoch start) times
    # from its first batch's end and does not count that batch.
    for _ in range(2):
        now[0] += 0.1
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    callback.on_train_epoch_end(trainer, module)
    assert len(logged) == 3 and logged[-1]["train/device/samples_per_sec"] == pytest.approx(320.0)
    resumed = TrainThroughput(window_size=2, clock=lambda: now[0], sync=lambda device: None)
    for _ in range(3):
        now[0] += 0.1
        resumed.on_train_batch_end(trainer, module, None, batch, 0)
    assert resumed.last["train/device/samples_per_sec"] == pytest.approx(320.0)  # 2 batches in 0.2 s, not 3


# -- 9. data-loading workers and shards for several fits and ranks ------------------------------------------
def test_loader_workers_split_the_cores_between_fits_and_ranks():
    assert loader_workers(None, cores=16) == 8
    assert loader_workers(None, cores=16, fits=8) == 1  # 8 fits on one GPU box: 2 cores each, one trains
    assert loader_workers(None, cores=16, ranks=2) == 7
    assert loader_workers(None, cores=2, fits=2) == 0  # no spare core: decode in the training process
    assert loader_workers(3, cores=2, fits=2) == 3  # asked for: given


def test_image_folder_loaders_shard_by_the_trainers_rank_and_share_the_cores(tmp_path, monkeypatch):
    from PIL import Image

    from lightclf.data import ImageFolder
    from lightclf.study.execution import plan_slots

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LIGHTCLF_CONCURRENT_FITS", plan_slots(4, ["0"])[0].env()["LIGHTCLF_CONCURRENT_FITS"])
    data = ImageFolder(data_dir=str(tmp_path), resolution=8, batch_size=2)
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    data.trainer = SimpleNamespace(world_size=2, global_rank=1, num_devices=2, strategy=cpu, overfit_batches=0)
    data.setup("fit")
    loader = data.train_dataloader()
    assert loader.num_workers == 1  # 16 cores / (4 fits x 2 ranks) = 2, one of which trains
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    mine = loader.sampler.indices().tolist()
    data.trainer = SimpleNamespace(world_size=2, global_rank=0, num_devices=2, strategy=cpu, overfit_batches=0)
    theirs = data.train_dataloader().sampler.indices().tolist()
    assert len(mine) == len(theirs) == 5 and mine != theirs  # each rank its own half (padded to equal)
    assert set(mine) | set(theirs) == set(range(len(data.train_set)))


def test_imports_stay_light():
    code = "import sys, lightclf.devices, lightclf.study.execution; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_ctrl_c_in_a_fit_exits_130_naming_the_checkpoint_it_wrote(tmp_path):
    """Lightning handles Ctrl-C inside a fit and exits 1; lightclf makes it 130 with its resume line."""
    stop = {"class_path": "kill_points.InterruptAtStep", "init_args": {"step": 3}}
    config = smoke_config(tmp_path, **{"trainer.max_epochs": 1, "trainer.callbacks": [*SMOKE_CALLBACKS, stop]})
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": PYTHONPATH}
    done = subprocess.run([sys.executable, "-m", "lightclf", "fit", "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"lightclf: interrupted by Ctrl-C; resume with --ckpt_path {folder}/checkpoints/interrupted.ckpt"
    )
