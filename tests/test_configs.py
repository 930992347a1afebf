"""Every shipped config parses, links data -> model and builds its network at its resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightclf.cli.lightning_cli import LightclfCLI
from lightclf.data import ImageDataModule
from lightclf.models import create_network
from lightclf.training.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]
MODEL_BASE = REPO / "configs/models/base.yaml"
# Model and baseline configs hold only what differs from configs/models/base.yaml and load after it.
MODELS = sorted(p for p in [*REPO.glob("configs/models/*.yaml"), *REPO.glob("baselines/*.yaml")] if p != MODEL_BASE)
CONFIGS = sorted([*REPO.glob("configs/*.yaml"), *MODELS])
STUDIES = sorted(p for p in REPO.glob("configs/study/*.yaml") if not p.stem.endswith("_base"))
# The compression studies: each compares the proposed net with the paper's baselines.
COMPRESSION_STUDIES = ("cifar10_compression", "fmnist_compression", "fmnist_fast", "fmnist_dilation", "fmnist_gpu")


def _cli(configs: list[Path], save_dir: Path) -> LightclfCLI:
    """The CLI's objects for these configs, merged in order, instantiated but not run."""
    args = [arg for config in configs for arg in ("--config", str(config))]
    return LightclfCLI(
        ImageClassifier,
        ImageDataModule,
        subclass_mode_data=True,
        run=False,
        save_config_callback=None,
        args=[*args, "--trainer.logger.init_args.save_dir", str(save_dir)],
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_instantiates(path, tmp_path):
    cli = _cli([MODEL_BASE, path] if path in MODELS else [path], tmp_path)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.hparams.img_size == cli.datamodule.resolution
    assert cli.model.hparams.in_chans == cli.datamodule.channels
    if path.name == "quickstart.yaml":
        return  # the fast recipe: see test_quickstart_uses_the_fast_recipe
    optimizer = cli.model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["betas"] == (0.9, 0.999)  # the paper's Adam
    assert optimizer.defaults["eps"] == 1e-8


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_base_configs_instantiate(path, tmp_path):
    """Each study's base configs, merged in its order (a base may be a partial overlay), build a fit."""
    from lightclf.study.spec import load_study

    study = load_study(path)
    bases = [study.base_config] if isinstance(study.base_config, str) else study.base_config
    cli = _cli([REPO / base for base in bases], tmp_path)
    assert cli.model.hparams.img_size == cli.datamodule.resolution and cli.trainer.max_epochs >= 1
    if path.stem == "fmnist_dilation":
        assert cli.trainer.max_epochs == 8  # its protocol's training length
    if path.stem == "fmnist_gpu":
        assert cli.trainer.max_epochs == 15 and cli.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(REPO)))
def test_model_configs_are_the_base_plus_what_differs(path, tmp_path):
    """Each model/baseline file names its network (and kwargs, W&B group/tags) and nothing else;
    merged after the base it keeps the base's data, schedule, recipe and callbacks."""
    import yaml

    own = yaml.safe_load(path.read_text())
    assert set(own) == {"trainer", "model"} and set(own["model"]) <= {"network", "network_kwargs"}
    assert set(own["trainer"]) == {"logger"} and set(own["trainer"]["logger"]["init_args"]) <= {"group", "tags"}
    cli = _cli([MODEL_BASE, path], tmp_path)
    assert cli.model.hparams.network == own["model"]["network"] == path.stem
    assert cli.model.hparams.network_kwargs == own["model"].get("network_kwargs", {})
    assert cli.trainer.max_epochs == 10 and cli.datamodule.resolution == 32  # the base's, kept
    logger_args = cli.config["trainer"]["logger"]["init_args"]  # the merged config, as the run saves it
    assert logger_args["project"] == "lightclf" and logger_args["tags"] == own["trainer"]["logger"]["init_args"]["tags"]
    assert logger_args["group"] == ("baselines" if path.parent.name == "baselines" else "models")
    assert {type(c).__name__ for c in cli.trainer.callbacks} >= {"ModelCheckpoint", "TrainThroughput"}


def _subset(node, template):
    """The part of ``node`` that ``template`` names (nested dicts)."""
    if not isinstance(template, dict):
        return node
    return {key: _subset(node.get(key), value) for key, value in template.items()}


def test_quickstart_uses_the_fast_recipe():
    import yaml

    quickstart = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    recipe = yaml.safe_load((REPO / "configs/recipes/fast.yaml").read_text())
    assert _subset(quickstart, recipe) == recipe  # the quickstart repeats the recipe; they must not drift apart


@pytest.mark.parametrize("recipe", ["fast", "paper"])
def test_recipes_compose_with_model_configs(recipe, tmp_path):
    cli = _cli([MODEL_BASE, REPO / "configs/models/ddsnet.yaml", REPO / f"configs/recipes/{recipe}.yaml"], tmp_path)
    optimizer = cli.model.optimizer_factory(cli.model.parameters())
    if recipe == "paper":
        assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 1e-3
        assert cli.model.lr_schedule is None and not cli.datamodule.augment and cli.model.hparams.ema_decay is None
    else:
        assert type(optimizer) is torch.optim.SGD and optimizer.defaults["nesterov"]
        assert cli.model.lr_schedule is not None and cli.datamodule.augment and cli.model.hparams.tta_flip


def test_every_network_has_a_config():
    import yaml

    from lightclf.models import PROPOSED_NETWORKS

    # A file named after a network must configure that network (a file's name alone proves nothing).
    configured = {}
    for path in MODELS:
        network = (yaml.safe_load(path.read_text()).get("model") or {}).get("network")
        if network is not None:
            assert network == path.stem, path
            configured[path.stem] = network
    assert set(PROPOSED_NETWORKS) <= set(configured)
    assert {"googlenet", "mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100"} <= set(configured)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_configs_load(path, monkeypatch):
    from lightclf.study.runner import load_study

    monkeypatch.chdir(REPO)
    study = load_study(path)
    specs = study.specs()
    networks = {s.factors["network"] for s in specs}
    if path.stem not in COMPRESSION_STUDIES:  # a focused study (tuned arms, a plateau check, a timm knob)
        assert len({s.run_id for s in specs}) == len(specs) >= 1
        assert all(tuned for _, tuned in study.arms()) if study.tune else True
    else:
        assert len({s.run_id for s in specs}) == len(specs) >= 10
        # the proposed net, its plain-conv ablation, the paper's baseline and MobileNet v1 (the fair baseline)
        assert {"ddsnet", "googlenet", "mobilenetv1_100", "ddsnet_plainconv"} <= networks
    # Fair baselines: every stride-32 baseline of a current study runs at least once on inputs where
    # its last stage is 2x2 or larger (fmnist_compression is the superseded appendix study).
    if path.stem != "fmnist_compression":
        for network in networks - {n for n in networks if n.startswith("ddsnet")}:
            assert max(s.factors["resolution"] for s in specs if s.factors["network"] == network) >= 56, network
    built = set()  # every grid point is buildable at its resolution (each distinct one once: seeds repeat them)
    for spec in specs:
        f = spec.factors
        if f["network"].startswith("ddsnet"):
            kwargs = {k: f[k] for k in ("width_multiplier", "dilation", "dilation_schedule", "small_input") if k in f}
            point = (f["network"], f["resolution"], *sorted(kwargs.items()))
            if point not in built:
                create_network(f["network"], 10, **kwargs).check_input_size(f["resolution"])
                built.add(point)


def test_help_lists_every_command():
    from conftest import run_lightclf

    result = run_lightclf("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lightclf ")
    for command in ("fit", "bench", "bench-compare", "study", "tune", "report", "export", "--input IMAGES"):
        assert command in result.stdout
    assert "W&B" not in result.stderr and "Warning" not in result.stderr  # no run starts, nothing to warn about
    assert "{fit,validate,test,predict}" in result.stdout  # no subcommand named: every parser is built


def test_an_unknown_command_is_one_line_naming_every_command(run_here):
    """Said before LightningCLI loads anything (tests/test_layout.py checks that torch stays unloaded)."""
    result = run_here("fitt")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lightclf: error: unknown command 'fitt'; did you mean 'fit'? (commands: fit, validate,")
    assert all(f" {command}," in line for command in ("test", "predict", "study", "tune", "report", "export"))


def test_a_command_builds_only_its_own_subcommand_parser():
    from lightning.pytorch.cli import LightningCLI

    from lightclf.cli import TRAINER_COMMANDS
    from lightclf.cli.lightning_cli import LightclfCLI

    # lightclf.cli names the Trainer commands before Lightning loads: the same list as Lightning's.
    assert TRAINER_COMMANDS == tuple(LightningCLI.subcommands())
    cli = LightclfCLI.__new__(LightclfCLI)  # the choice alone, without parsing a command line
    for only, built in (("fit", ["fit"]), ("test", ["test"]), ("fitt", ["fit", "validate", "test", "predict"]),
                        (None, ["fit", "validate", "test", "predict"])):  # fmt: skip
        cli.only = only
        assert list(cli.subcommands()) == built
        assert cli.subcommands()[built[0]] >= {"model", "datamodule"}  # Lightning's skip set, kept


def test_study_dry_run_prints_runnable_commands(tmp_path):
    import shlex

    import yaml

    from conftest import run_lightclf
    from lightclf.study.runner import load_study

    study = yaml.safe_load((REPO / "configs/study/fmnist_compression.yaml").read_text())
    study.update(base_config=str(REPO / study["base_config"]), save_dir=str(tmp_path / "runs"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    result = run_lightclf("study", "--config", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("python -m lightclf")]
    loaded = load_study(path)
    specs = loaded.specs()
    assert len(commands) == len(specs) == 11
    for command, spec in zip(commands, specs):  # a shell hands lightclf the runner's exact argument list
        assert shlex.split(command)[3:] == spec.cli_args(loaded.base_config, loaded.save_dir, loaded.project)
    assert not (tmp_path / "runs").exists()  # a dry run trains and writes nothing
