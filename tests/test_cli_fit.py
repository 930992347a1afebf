"""Smoke fits through `python -m lightclf fit` on real data (digits), one per network family."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_lightclf, smoke_config
from lightclf.study.wandb_records import read_run

FAMILIES = {
    "ddsnet": {"width_multiplier": 0.25, "small_input": True},
    "ddsnet_plainconv_nodilation": {"width_multiplier": 0.25, "small_input": True},
    "mobilenetv3_small_050": {},
    "googlenet": {},
}


def _single(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.mark.parametrize("network", FAMILIES)
def test_smoke_fit(tmp_path, network):
    # The timm net validates every second of 3 epochs (8 batches each, the same 24 steps): the epochs
    # without validation record none, though Lightning still holds the last one's metrics.
    timm = network == "mobilenetv3_small_050"
    overrides = {"trainer.check_val_every_n_epoch": 2, "trainer.max_epochs": 3, "trainer.limit_train_batches": 8}
    config = smoke_config(tmp_path, network=network, network_kwargs=FAMILIES[network], **(overrides if timm else {}))
    result = run_lightclf("fit", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    # No progress bar (as in studies): one line per epoch says where the fit stands.
    lines = re.findall(r"^epoch (\d)/\d: (val top-1 \d+\.\d\d% \(best \d+\.\d\d% after epoch \d\), val loss "
                       r"\d+\.\d{3}|no validation this epoch); \d+\.\d min(, about \d+h\d\dm left at this pace)?$",
                       result.stderr, re.M)  # fmt: skip
    said = [(epoch, text.startswith("val top-1"), bool(left)) for epoch, text, left in lines]
    expected = (
        [("1", False, True), ("2", True, True), ("3", False, False)]
        if timm
        else [("1", True, True), ("2", True, False)]
    )
    assert said == expected, result.stderr[-2000:]

    run_folder = _single((tmp_path / "runs" / "smoke").iterdir())
    checkpoints = sorted(p.name for p in (run_folder / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) >= 2
    assert (run_folder / "config.yaml").read_text().count(network) >= 1
    record = json.loads((run_folder / "results.json").read_text())
    assert record["status"] == "finished" and record["network"] == network
    assert re.fullmatch(r".+ \(\w+\), \d+ threads?", record["device"]), record["device"]  # model (ISA), threads
    assert [e["epoch"] for e in record["val_per_epoch"]] == ([1] if timm else [0, 1])
    assert 0.0 <= record["test_metrics"]["test/acc1"] <= 1.0
    assert record["test_metrics"]["test/acc1"] <= record["test_metrics"]["test/acc5"]
    # complexity.json: the deployed network's figures at the data's resolution, counted independently.
    from lightclf.measure.complexity import count_macs, count_params, receptive_field
    from lightclf.models import create_network

    complexity = json.loads((run_folder / "complexity.json").read_text())
    net = create_network(network, 10, **FAMILIES[network])
    if network == "googlenet":
        net = create_network(network, 10, **{**FAMILIES[network], "aux_logits": False})  # as deployed
    assert complexity["resolution"] == 32 and complexity["params"] == count_params(net)
    assert complexity["macs"] == count_macs(net, 32, 3) and complexity["size_mb"] > complexity["params"] * 4 / 1e6 * 0.9
    assert complexity["receptive_field"] == receptive_field(net)
    if network.startswith("ddsnet"):
        assert complexity["receptive_field"] > 32  # the theoretical field, wider than the image

    # The W&B offline run exists and holds the loss history and cost figures.
    wandb_dir = _single((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    run = read_run(_single(wandb_dir.glob("run-*.wandb")))
    assert run["id"] == run_folder.name
    losses = [row["train/loss"] for row in run["history"] if "train/loss" in row]
    assert len(losses) >= 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    expected = ["params", "macs", "size_mb", "test/acc1", "train/device/samples_per_sec", "train/device/flops_per_sec"]
    for key in expected + (["receptive_field"] if network.startswith("ddsnet") else []):
        assert key in run["summary"], key
    assert run["config"]["network"] == network
    assert "complexity" in run["config"] and "lightclf_config" in run["config"]


def test_second_run_in_same_save_dir_does_not_collide(tmp_path):
    config = smoke_config(
        tmp_path, **{"trainer.max_epochs": 1, "trainer.limit_train_batches": 2, "test_after_fit": False}
    )
    for _ in range(2):
        result = run_lightclf("fit", "--config", str(config))
        assert result.returncode == 0, result.stderr[-2000:]
    run_folders = list((tmp_path / "runs" / "smoke").iterdir())
    assert len(run_folders) == 2 and all((f / "config.yaml").exists() for f in run_folders)


@pytest.mark.parametrize(
    "override,expected",
    [
        (["--model.network_kwargs", '{"width_multiplier": 0}'], "width_multiplier must be > 0"),
        (["--model.network_kwargs", '{"width_multiplier": 0.25, "dilation": 0}'], "dilation must be >= 1"),
        (["--model.network", "ddsnett"], "model.network: unknown network 'ddsnett'"),
        (
            ["--model.network_kwargs", '{"width_multiplier": 0.25}', "--data.init_args.resolution", "32"],
            "data.resolution: dilation 2 at block",
        ),
        (
            ["--model.network", "googlenet", "--model.network_kwargs", "{}", "--data.init_args.resolution", "4"],
            "data.resolution: 4 px is too small",
        ),
        (["--data.init_args.batch_size", "0"], "data.batch_size must be >= 1"),
        (["--data.init_args.val_fraction", "0"], "data.val_fraction must be in (0, 1), got 0.0"),
        (["--model.ema_decay", "1.5"], "model.ema_decay must be in (0, 1)"),
        (["--model.label_smoothing", "1"], "model.label_smoothing must be in [0, 1)"),
        (["--model.mixup_alpha", "-1"], "model.mixup_alpha and cutmix_alpha must be >= 0"),
        (["--data.init_args.crop_padding", "-2"], "data.crop_padding must be >= 0"),
        (["--model.network_kwargs", '{"bogus": 1}'], "does not accept"),
        (["--model.network", "googlenet", "--model.network_kwargs", '{"small_input": true}'], "does not accept"),
    ],
)
def test_bad_config_fails_before_training_with_one_line(tmp_path, override, expected, run_here):
    config = smoke_config(tmp_path)
    result = run_here("fit", "--config", str(config), *override)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("lightclf: error:") and expected in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "smoke").exists()  # nothing trained, no run folder


@pytest.mark.parametrize(
    "override,expected",
    [
        (["--model.netwrk", "ddsnet"], "unrecognized arguments: --model.netwrk"),
        (["--trainer.max_epochs", "x"], "trainer.max_epochs: Expected a <class 'int'> (given: x)"),
        (["--data.init_args.batch_size", "abc"], "Got value: abc"),
        (["--data", "lightclf.data.CIFAR11"], "data: Problem with given class_path 'lightclf.data.CIFAR11'"),
        (["--trainer.callbacks+=my_callbacks.Missing"], "No module named 'my_callbacks'"),
        (["--model.optimizer", "torch.optim.Adamm"], "has no attribute 'Adamm'"),
    ],
)
def test_parser_errors_are_one_line(tmp_path, override, expected, run_here):
    config = smoke_config(tmp_path)
    result = run_here("fit", "--config", str(config), *override)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line: no usage, no union plumbing
    assert result.stderr.startswith("lightclf: error: ") and expected in result.stderr, result.stderr
    assert "(options: lightclf fit --help)" in result.stderr


def test_broken_yaml_and_unknown_key(tmp_path, run_here):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  network: [ddsnet\n")
    result = run_here("fit", "--config", str(broken))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "Problems parsing config" in result.stderr and "line 3, column 1" in result.stderr
    assert f"--config {broken}:" in result.stderr  # which file: jsonargparse alone does not say
    config = smoke_config(tmp_path)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(config.read_text().replace("network: ddsnet", "netwrk: ddsnet"))
    result = run_here("fit", "--config", str(unknown))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "does not accept option 'model.netwrk'" in result.stderr


def test_overfit_batches_trains_on_the_same_whole_batches_every_epoch():
    """``trainer.overfit_batches``, the usual first check that a net can learn at all: Lightning
    swapped every sampler that is not a SequentialSampler for one, which on the in-memory loader
    (``batch_size=None``) yielded single images, and the first forward pass crashed."""
    from functools import partial

    import lightning as L
    import torch

    from lightclf.data import Digits
    from lightclf.training.module import ImageClassifier

    seen: list[torch.Tensor] = []
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch[1].clone())
            assert batch[0].shape == (16, 1, 32, 32)  # a whole batch of images, not one image

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    L.seed_everything(0)
    data = Digits(resolution=32, channels=1, batch_size=16)
    model = ImageClassifier("ddsnet", {"width_multiplier": 0.25, "small_input": True}, in_chans=1, img_size=32,
                            optimizer=partial(torch.optim.Adam, lr=0.01))  # fmt: skip
    trainer = L.Trainer(overfit_batches=1, max_epochs=20, callbacks=[Record()], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, check_val_every_n_epoch=20)  # fmt: skip
    trainer.fit(model, data)
    assert len(seen) == 20 and all(torch.equal(labels, seen[0]) for labels in seen)
    assert losses[0] > 2.0 and losses[-1] < 0.05  # it memorises the batch it sees (0.002 here)
