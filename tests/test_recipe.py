"""The fast recipe's parts: the dilated-conv fast path, per-sample augmentation, per-step LR
schedules, EMA, mixup and flip TTA."""

from __future__ import annotations

import json
import re

import lightning as L
import numpy as np
import pytest
import timm
import torch
from torch import nn

from conftest import run_lightclf, smoke_config
from lightclf.data import Digits, FashionMNIST
from lightclf.models.dilated_dw import DilatedDepthwiseConv2d, fast_dilated_available
from lightclf.training.module import ImageClassifier
from lightclf.training.schedules import OneCycle, WarmupCosine


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dilation, size", [(2, 7), (2, 4), (3, 8), (2, 14)])
def test_fast_dilated_conv_equals_nn_conv2d(memory_format, dilation, size):
    assert fast_dilated_available()  # the kernel builds on this machine (a C++ compiler is present)
    torch.manual_seed(0)
    fast = DilatedDepthwiseConv2d(24, dilation)
    ref = nn.Conv2d(24, 24, 3, 1, dilation, dilation, groups=24, bias=False)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(6, 24, size, size).contiguous(memory_format=memory_format)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), ref(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)  # the same oneDNN forward
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    assert xa.grad.is_contiguous(memory_format=memory_format)  # the layout the neighbours expect


def test_ddsnet_fast_path_trains_like_plain_convs():
    """Whole net: same weights, same batch -> same loss and gradients with and without the fast path."""
    torch.manual_seed(0)
    kwargs = dict(num_classes=10, width_multiplier=0.25, small_input=True)
    fast = timm.create_model("ddsnet", **kwargs)
    slow = timm.create_model("ddsnet", fast_dilated=False, **kwargs)
    slow.load_state_dict(fast.state_dict())
    assert sum(isinstance(m, DilatedDepthwiseConv2d) for m in fast.modules()) == 6  # blocks 6-10 and 12
    assert not any(isinstance(m, DilatedDepthwiseConv2d) for m in slow.modules())
    x, y = torch.randn(16, 3, 28, 28).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (16,))
    for net in (fast, slow):
        net.to(memory_format=torch.channels_last)
        nn.functional.cross_entropy(net(x), y).backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fast_path_off_in_eval_and_export_paths():
    conv = DilatedDepthwiseConv2d(8, 2)
    x = torch.randn(2, 8, 7, 7)
    assert conv._fast_path_applies(x)  # training on the CPU in float32: the fast backward
    with torch.no_grad():
        assert not conv._fast_path_applies(x)  # eval / export: nn.Conv2d as is
    with torch.inference_mode():
        assert not conv._fast_path_applies(x)
    assert type(conv(x).grad_fn).__name__ == "_DilatedDepthwise3x3Backward"  # the path taken, not just "a graph"
    assert not conv._fast_path_applies(x.bfloat16())  # a bf16 layer input outside autocast: PyTorch's path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv._fast_path_applies(x)  # bf16 autocast: the fast backward too
    with torch.autocast("cpu", dtype=torch.float16):
        assert not conv._fast_path_applies(x)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fast_dilated_conv_under_bf16_autocast_matches_autocast_nn_conv2d(memory_format):
    torch.manual_seed(0)
    fast = DilatedDepthwiseConv2d(16, 2)
    ref = nn.Conv2d(16, 16, 3, 1, 2, 2, groups=16, bias=False)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, 16, 7, 7).contiguous(memory_format=memory_format)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = fast(xa), ref(xb)
    assert type(ya.grad_fn).__name__ == "_DilatedDepthwise3x3Backward" and ya.dtype == yb.dtype == torch.bfloat16
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)  # autocast's own bf16 forward
    assert xa.grad.dtype == torch.float32 and fast.weight.grad.dtype == torch.float32  # each in its input's dtype
    torch.testing.assert_close(xa.grad, xb.grad, rtol=2e-2, atol=2e-2)  # bf16 rounding
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=2e-2, atol=5e-2)


def test_augmentation_is_per_sample_and_seeded_by_step():
    data = FashionMNIST(augment=True, seed=3)
    x = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28).repeat(256, 1, 1, 1) + 1
    a, b, c = data.augment_batch(x, 5), data.augment_batch(x, 5), data.augment_batch(x, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)  # same step -> same draw: exact resume
    flipped = (a[:, 0, 14, :].argmax(-1) < 14).float().mean()  # mirrored rows have their maximum on the left
    assert 0.3 < flipped < 0.7  # each image draws its own flip
    distinct = {tuple(img[0, :, :].nonzero().min(0).values.tolist()) for img in a}
    assert len(distinct) > 10  # and its own crop offset (one offset per batch would give 1)
    assert a.shape == x.shape and (a == 0).any()  # shifted in from the zero padding


def _lrs_of_fit(module: ImageClassifier, epochs: int = 2, batches: int = 6) -> list[float]:
    lrs: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
    )  # fmt: skip
    trainer.fit(module, datamodule=Digits(resolution=32, batch_size=32))
    return lrs


def _module(img_size: int = 32, **kwargs) -> ImageClassifier:
    return ImageClassifier("ddsnet", {"width_multiplier": 0.25, "small_input": True}, img_size=img_size, **kwargs)


def test_one_cycle_steps_every_batch():
    lrs = _lrs_of_fit(_module(optimizer=lambda p: torch.optim.SGD(p, lr=0.4), lr_schedule=OneCycle(pct_start=0.25)))
    assert len(lrs) == 12 and len(set(lrs)) == 12  # a new rate every step, not every epoch
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(0.4, rel=0.05) and 1 <= peak <= 4
    assert lrs[0] == pytest.approx(0.4 / 25) and lrs[-1] < 0.05


def test_warmup_cosine_warms_up_then_decays():
    schedule = WarmupCosine(warmup_epochs=0.5, warmup_lr_init=1e-4, min_lr=1e-5)
    lrs = _lrs_of_fit(_module(optimizer=lambda p: torch.optim.AdamW(p, lr=0.01), lr_schedule=schedule))
    assert lrs[0] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(lrs[:3], lrs[1:4]))  # 3 warmup steps up
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))  # then cosine down
    assert max(lrs) <= 0.01


def test_mixup_targets_and_numpy_state_restored():
    module = _module(mixup_alpha=0.4, label_smoothing=0.1)
    state = np.random.get_state()[1].copy()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    original = x.clone()
    mixed, soft = module._mix(x, y)
    assert soft.shape == (8, 10) and torch.allclose(soft.sum(1), torch.ones(8))
    assert not torch.equal(mixed, original) and torch.equal(x, original)  # the batch itself is not mixed in place
    again, _ = module._mix(x, y)
    assert torch.equal(again, mixed)  # seeded by the step: a resumed run mixes the same way
    assert np.array_equal(np.random.get_state()[1], state)
    loss, _ = module._loss(module.network(mixed), soft)
    assert torch.isfinite(loss)
    assert module._mix(x[:7], y[:7])[1].dim() == 1  # odd batch: mixup skipped, hard labels kept


def test_flip_tta_averages_mirrored_logits():
    module = _module(tta_flip=True).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (module(x) + module(x.flip(-1))) / 2
        torch.testing.assert_close(module.eval_logits(x, "test"), expected)
        torch.testing.assert_close(module.eval_logits(x, "val"), module(x))  # model selection stays plain


def test_scheduler_and_lr_schedule_exclusive():
    from lightclf.errors import ConfigError

    with pytest.raises(ConfigError, match="exclusive"):
        _module(scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1), lr_schedule=OneCycle())


def test_ema_weights_are_validated_checkpointed_and_tested_and_the_test_curve_matches(tmp_path):
    """One fit (EMA, flip TTA, a test every epoch) checked three ways: the checkpoint holds both
    weight sets, the per-epoch test curve at the best epoch is the run's test figure, and a fresh
    process testing the checkpoint reports it too."""
    from conftest import SMOKE_CALLBACKS

    callbacks = [*SMOKE_CALLBACKS, {"class_path": "lightclf.training.evaluation.TestEveryEpoch"}]
    # The whole test split each time (TestEveryEpoch reads all of it), kept small: 10% of digits, 179
    # images, where the default 25% made four flip-TTA passes over 449 the test's main cost.
    overrides = {"trainer.callbacks": callbacks, "trainer.limit_test_batches": 1.0, "model.ema_decay": 0.9}
    config = smoke_config(tmp_path, **overrides, **{"model.tta_flip": True, "data.init_args.test_fraction": 0.1})
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    record = json.loads((folder / "results.json").read_text())
    ckpt = torch.load(record["best_ckpt"], weights_only=False)
    raw, ema = ckpt["current_model_state"], ckpt["state_dict"]
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())

    curve = record["test_per_epoch"]
    assert [row["epoch"] for row in curve] == [0, 1]
    assert all(0.0 <= row["test_epoch/acc1"] <= row["test_epoch/acc5"] <= 1.0 for row in curve)
    # The final test evaluates the best-validation checkpoint (EMA weights, flip TTA): the curve at
    # that epoch is the same number, so the curve measures what the run reports.
    best_epoch = int(re.search(r"epoch=(\d+)", record["best_ckpt"]).group(1))
    assert curve[best_epoch]["test_epoch/acc1"] == pytest.approx(record["test_metrics"]["test/acc1"], abs=1e-6)

    # A fresh process testing the checkpoint (the EMA weights) reports what the fit's own test did.
    tested = run_lightclf("test", "--config", str(folder / "config.yaml"), "--ckpt_path", record["best_ckpt"])
    assert tested.returncode == 0, tested.stderr[-2000:]
    (test_run,) = [p for p in (tmp_path / "runs" / "smoke").iterdir() if p != folder]  # the test's own run
    again = json.loads((test_run / "results.json").read_text())["test_metrics"]
    assert again["test/acc1"] == pytest.approx(record["test_metrics"]["test/acc1"], abs=1e-6)


def test_ema_update_equals_averaged_models_and_reads_no_device_count():
    from types import SimpleNamespace

    from torch.optim.swa_utils import AveragedModel

    from lightclf.library_hooks import averaged_model
    from lightclf.training.ema import EMA

    def timm_warmup_ema(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """The reference, one tensor at a time: decay min(0.9, (1 + n) / (10 + n)); counts copied."""
        if not averaged.is_floating_point():
            return current.clone()
        decay = min(0.9, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged + (current - averaged) * (1.0 - decay)

    module = _module()
    reference = AveragedModel(module, avg_fn=timm_warmup_ema, use_buffers=True)
    ema = EMA(decay=0.9)
    ema.setup(SimpleNamespace(), module, "fit")
    assert averaged_model(ema).n_averaged.device.type == "cpu"
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        module.network.train()(torch.randn(4, 3, 32, 32, generator=gen))  # BatchNorm statistics move too
        reference.update_parameters(module)
        ema.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, step - 1)
    mine, theirs = averaged_model(ema).module.state_dict(), reference.module.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-6, atol=1e-6)
    assert not torch.equal(mine["network.classifier.weight"], module.state_dict()["network.classifier.weight"])
    assert int(averaged_model(ema).n_averaged) == int(reference.n_averaged) == 5


def test_cutmix_pastes_a_box_of_the_mirrored_batch():
    module = _module(cutmix_alpha=1.0)
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 32, 32).clone()
    mixed, soft = module._mix(x, torch.arange(8))
    # timm mixes each image with the batch's mirror (image i with 7 - i): a box of pixels is replaced.
    assert ((mixed[0] == 0) | (mixed[0] == 7)).all() and (mixed[0] == 7).any() and (mixed[0] == 0).any()
    share = float((mixed[0] == 7).float().mean())
    assert soft[0, 7] == pytest.approx(share, abs=0.02)  # the label share is the box's area


def test_per_epoch_scheduler_steps_once_an_epoch():
    module = _module(
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1), scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5)
    )
    lrs = _lrs_of_fit(module, epochs=3, batches=4)
    assert lrs[:4] == [0.1] * 4 and lrs[4:8] == [pytest.approx(0.05)] * 4 and lrs[8:] == [pytest.approx(0.025)] * 4


def test_fast_dilated_path_can_be_turned_off(monkeypatch):
    from lightclf.models import dilated_dw

    for value, expected in (("0", False), ("1", True)):
        monkeypatch.setattr(dilated_dw, "_state", {})  # the answer is cached per process: ask afresh
        monkeypatch.setenv("LIGHTCLF_FAST_DILATED", value)
        assert dilated_dw.fast_dilated_available() is expected


def test_channels_last_by_default_on_the_cpu_and_contiguous_elsewhere(monkeypatch):
    """The documented default: channels_last where measured faster (CPU), contiguous otherwise;
    an explicit setting wins."""
    cpu = _module()
    cpu.setup("fit")
    assert cpu.channels_last is True
    assert cpu.network.conv_stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    elsewhere = _module()
    monkeypatch.setattr(type(elsewhere), "device", property(lambda self: torch.device("cuda", 0)))
    elsewhere.setup("validate")
    assert elsewhere.channels_last is False and elsewhere.network.conv_stem[0].weight.is_contiguous()
    forced = _module(channels_last=False)
    forced.setup("fit")
    assert forced.channels_last is False


def test_no_compiler_falls_back_to_pytorchs_backward_with_a_warning(monkeypatch):
    """Without a C++ compiler the kernel build fails: one warning, the plain backward, same numbers."""
    from lightclf.models import dilated_dw

    monkeypatch.setattr(dilated_dw, "_state", {})
    monkeypatch.setattr(dilated_dw, "_build", lambda: (_ for _ in ()).throw(RuntimeError("c++: not found")))
    with pytest.warns(UserWarning, match=r"fast dilated-conv kernel unavailable \(c\+\+: not found\)"):
        assert dilated_dw.fast_dilated_available() is False
    conv = DilatedDepthwiseConv2d(8, 2)
    x = torch.randn(2, 8, 7, 7, requires_grad=True)
    assert not conv._fast_path_applies(x)
    out = conv(x)
    assert type(out.grad_fn).__name__ != "_DilatedDepthwise3x3Backward"
    reference = torch.nn.functional.conv2d(x, conv.weight, padding=2, dilation=2, groups=8)
    torch.testing.assert_close(out, reference)


def test_bf16_mixed_training_step_on_the_cpu(monkeypatch):
    """precision: bf16-mixed (the GPU configs' setting) trains here too: a finite loss that falls.
    Twelve steps, not more: on a CPU without native bf16 (an AVX2-only EPYC) every conv falls back to
    PyTorch's reference kernels, about 7x slower than float32, and 36 steps took 74 s of CI. At 24 px,
    not 32: the same path at 56% of the pixels."""
    L.seed_everything(0)
    module = _module(img_size=24, optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    data = Digits(resolution=24, channels=3, batch_size=32)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=12, limit_val_batches=0, precision="bf16-mixed",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[])  # fmt: skip
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    trainer.callbacks.append(Record())
    # Where oneDNN has no bf16 kernels the fit says so once (the answer forced, to test both CPUs).
    monkeypatch.setattr("lightclf.training.module.cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="oneDNN has no bf16 kernels"):
        trainer.fit(module, datamodule=data)
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_kernel_build_is_shared_by_checkouts_and_split_by_what_it_depends_on(tmp_path, monkeypatch):
    """Two checkouts of the same source (same torch, same CPU) share one build; another source gets
    its own. cpp_extension's default named the build by name alone and wrote the source's path into
    it, so two checkouts rebuilt over each other on every first use."""
    from lightclf.models import dilated_dw

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    text = dilated_dw._SOURCE.read_text()
    checkouts = [tmp_path / name / dilated_dw._SOURCE.name for name in ("one", "two")]
    folders = []
    for source in checkouts:
        source.parent.mkdir()
        source.write_text(text)
        monkeypatch.setattr(dilated_dw, "_SOURCE", source)
        folders.append(dilated_dw.build_folder())
    assert folders[0] == folders[1] and folders[0].parent == tmp_path / "extensions"
    built_from = folders[0] / dilated_dw._SOURCE.name
    assert built_from.read_text() == text  # the build reads its own copy, whichever checkout asked
    checkouts[1].write_text(text + "// changed\n")
    changed = dilated_dw.build_folder()
    assert changed != folders[0] and (changed / dilated_dw._SOURCE.name).read_text().endswith("// changed\n")
    monkeypatch.setattr(dilated_dw, "cpu_signature", lambda: "another-cpu")
    assert dilated_dw.build_folder() not in (folders[0], changed)
