"""Benchmarks on any device: the CPU path runs; the CUDA branch's plumbing (device, sync, CUDA-event
timer, peak memory) is checked with stand-ins, since this machine has no GPU."""

from __future__ import annotations

import pytest
import torch

from lightclf.errors import ConfigError
from lightclf.measure.bench import run_bench
from lightclf.measure.bench_train import rows_of, run_train_bench
from lightclf.measure.device import DeviceTimer, precision_context, resolve_device


def test_devices_are_checked_in_one_line(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ConfigError, match="expected cpu, cuda or cuda:N"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        resolve_device("cuda:2")


def test_cuda_timer_records_events_and_syncs_its_device(monkeypatch):
    calls = []

    class FakeEvent:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.at = None

        def record(self, stream=None) -> None:
            calls.append(("record", stream))
            self.at = len(calls)

        def synchronize(self) -> None:
            calls.append("event-sync")

        def elapsed_time(self, end) -> float:
            return 40.0  # ms between the two events

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123_400_000)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    timer = DeviceTimer(torch.device("cuda", 1))
    assert timer.uses_events
    seconds = timer.seconds(lambda: calls.append("work"), iters=4)
    assert seconds == pytest.approx(0.040 / 4)
    # The queue drained before, then the work between two events, then one wait on the end event.
    assert calls == [
        ("sync", torch.device("cuda", 1)),
        ("record", "stream of cuda:1"),  # the measured device's queue, not the current device's
        "work",
        "work",
        "work",
        "work",
        ("record", "stream of cuda:1"),
        "event-sync",
    ]
    timer.reset_peak_memory()
    assert timer.peak_memory_mb() == 123.4


def test_cpu_timer_uses_the_clock_and_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("no CUDA sync on the CPU"))
    timer = DeviceTimer(torch.device("cpu"))
    assert not timer.uses_events and timer.peak_memory_mb() is None
    assert timer.seconds(lambda: sum(range(1000)), iters=3) > 0


def test_precision_contexts():
    with precision_context(torch.device("cpu"), "bf16-mixed"):
        assert torch.is_autocast_enabled("cpu")
    with precision_context(torch.device("cpu"), "32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="--precision"):
        precision_context(torch.device("cpu"), "16-mixed")


def test_benchmarks_run_on_the_cpu_and_name_their_device_and_precision():
    spec = "ddsnet:width_multiplier=0.25,small_input=true"
    (row,) = run_bench([spec], [32], ["contiguous"], ["eager"], batch_size=2, repeats=1, warmup=1, iters=1,
                       device="cpu", precision="bf16-mixed", log=lambda m: None)  # fmt: skip
    assert (row.device, row.precision, row.provider, row.process_peak_mb) == ("cpu", "bf16-mixed", "", None)
    (ort,) = run_bench([spec], [32], ["contiguous"], ["onnxruntime"], batch_size=2, repeats=1, warmup=1, iters=1,
                       device="cpu", log=lambda m: None)  # fmt: skip
    assert ort.provider == "CPUExecutionProvider"  # the provider that ran it, not the requested device
    cases = run_train_bench([spec], [28], ["channels_last"], ["32"], batch_size=4, rounds=1, steps=1, warmup=1,
                            log=lambda m: None, device="cpu")  # fmt: skip
    (train,) = rows_of(cases)
    assert train.device == "cpu" and train.images_per_s > 0 and train.mfu is None  # no known CPU peak


def test_train_bench_compares_bf16_and_compile_with_fp32_eager_round_by_round(monkeypatch):
    """Every bf16 or compiled case gets its per-round img/s ratio over the fp32 eager case of the same
    net, size and format; a compiled case compiles its network in place, as `model.compile` does."""
    from lightclf.measure import bench_train

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(type(self).__name__))
    spec = "ddsnet:width_multiplier=0.25,small_input=true"
    cases = run_train_bench([spec], [28], ["contiguous"], ["32", "bf16-mixed"], batch_size=2, rounds=2, steps=1,
                            warmup=1, log=lambda m: None, backends=["eager", "compile"])  # fmt: skip
    assert [(c.precision, c.backend) for c in cases] == [
        ("32", "eager"), ("32", "compile"), ("bf16-mixed", "eager"), ("bf16-mixed", "compile")]  # fmt: skip
    assert compiled == ["DDSNet", "DDSNet"] and {r.backend for r in rows_of(cases)} == {"eager", "compile"}
    for case, rates in zip(cases, ([100, 200], [150, 200], [200, 100], [50, 400])):
        case.rates = rates
    found = {(r["precision"], r["backend"]): r for r in bench_train.speedups(cases)}
    assert set(found) == {("32", "compile"), ("bf16-mixed", "eager"), ("bf16-mixed", "compile")}
    assert (found[("32", "compile")]["ratio"], found[("32", "compile")]["ratio_min"]) == (1.25, 1.0)  # 1.5, 1.0
    assert found[("bf16-mixed", "eager")]["ratio"] == 1.25 and found[("bf16-mixed", "compile")]["ratio_max"] == 2.0


def test_train_bench_prices_deterministic_mode_and_restores_the_global_flag():
    seen = []
    cases = run_train_bench(["ddsnet:width_multiplier=0.25,small_input=true"], [28], ["contiguous"], ["32"],
                            batch_size=2, rounds=1, steps=1, warmup=0, log=lambda m: None,
                            backends=["eager", "deterministic"])  # fmt: skip
    for case in cases:
        real = case.net.forward
        case.net.forward = lambda x, real=real: (seen.append(torch.are_deterministic_algorithms_enabled()), real(x))[1]
        case.step()
    assert seen == [False, True] and not torch.are_deterministic_algorithms_enabled()


def test_benchmarks_refuse_a_missing_gpu_in_one_line(capsys):
    from lightclf.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    for command in (["bench-train", "--device", "cuda", "--rounds", "1"], ["bench-compare", "--device", "cuda:0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and err == [
            f"lightclf: error: --device {command[2]}: no CUDA GPU is visible here (torch.cuda.is_available() is False)"
        ]


def test_compile_is_a_config_key_that_keeps_checkpoint_names():
    from lightclf.training.module import ImageClassifier

    kwargs = {"width_multiplier": 0.25, "small_input": True}
    plain = ImageClassifier("ddsnet", kwargs, img_size=28)
    compiled = ImageClassifier("ddsnet", kwargs, img_size=28, compile=True, compile_mode="reduce-overhead")
    for module in (plain, compiled):
        module.setup("fit")
    assert plain.network._compiled_call_impl is None and compiled.network._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefixes in checkpoints
    assert compiled.hparams.compile_mode == "reduce-overhead"


def test_fit_overhead_times_fit_and_bare_loop_on_one_device():
    from lightclf.training.overhead import fit_overhead

    row = fit_overhead(batch_size=16, rounds=1, steps=2, warmup=1, log=lambda m: None, device="cpu", precision="32")
    assert row["device"] == "cpu" and row["precision"] == "32" and row["rounds"] == 1
    assert row["fit_images_per_s"] > 0 and row["bare_images_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["fit_images_per_s"] / row["bare_images_per_s"], rel=1e-2)
