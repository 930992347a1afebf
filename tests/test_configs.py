"""Every shipped config parses, links data -> model and builds its network at its resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightclf.cli import LightclfCLI
from lightclf.data import ImageDataModule
from lightclf.models import create_network
from lightclf.module import ImageClassifier

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    [*REPO.glob("configs/*.yaml"), *REPO.glob("configs/models/*.yaml"), *REPO.glob("baselines/*.yaml"),
     *REPO.glob("configs/study/*_base.yaml")]
)  # fmt: skip
STUDIES = sorted(p for p in REPO.glob("configs/study/*.yaml") if not p.stem.endswith("_base"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_instantiates(path, tmp_path):
    cli = LightclfCLI(
        ImageClassifier,
        ImageDataModule,
        subclass_mode_data=True,
        run=False,
        save_config_callback=None,
        args=["--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path)],
    )
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.hparams.img_size == cli.datamodule.resolution
    assert cli.model.hparams.in_chans == cli.datamodule.channels
    optimizer = cli.model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["betas"] == (0.9, 0.999)
    assert optimizer.defaults["eps"] == 1e-8


def test_every_network_has_a_config():
    from lightclf.models import PROPOSED_NETWORKS

    names = {p.stem for p in CONFIGS}
    assert set(PROPOSED_NETWORKS) <= names
    assert {"googlenet", "mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_configs_load(path, monkeypatch):
    from lightclf.study import load_study

    monkeypatch.chdir(REPO)
    study = load_study(path)
    specs = study.specs()
    assert len({s.run_id for s in specs}) == len(specs) >= 10
    networks = {s.factors["network"] for s in specs}
    assert {"ddsnet", "googlenet", "mobilenetv1_100", "mobilenetv2_100", "ddsnet_plainconv"} <= networks
    for spec in specs:  # every grid point is buildable at its resolution
        f = spec.factors
        if f["network"].startswith("ddsnet"):
            kwargs = {k: f[k] for k in ("width_multiplier", "dilation", "small_input") if k in f}
            create_network(f["network"], 10, **kwargs).check_input_size(f["resolution"])
