"""The core install fits; a command that needs an extra names it in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import tomllib

from conftest import PYTHONPATH, REPO, smoke_config

# What the extras bring (lightclf.cli.EXTRAS); blocked, the interpreter behaves as a core-only install.
EXTRA_MODULES = [
    "scipy",
    "statsmodels",
    "matplotlib",
    "optuna",
    "submitit",
    "wandb_workspaces",
    "onnx",
    "onnxruntime",
    "sklearn",
]


def _core_only(*args: str) -> subprocess.CompletedProcess:
    # Not importable, and not installed either for the libraries that probe metadata first (torchmetrics
    # imports matplotlib when its distribution is found).
    code = (
        "import sys, importlib.metadata as md, importlib.util as iu\n"
        f"blocked = set({EXTRA_MODULES!r}) | {{'scikit-learn', 'scikit_learn', 'wandb-workspaces', 'wandb_workspaces'}}\n"
        "for name in blocked: sys.modules[name] = None  # ImportError, as when not installed\n"
        "version, distribution, find_spec = md.version, md.distribution, iu.find_spec\n"
        "def missing(name): return name.split('.')[0].lower() in blocked\n"
        "def no_version(name): raise md.PackageNotFoundError(name)\n"
        "md.version = lambda name: no_version(name) if missing(name) else version(name)\n"
        "md.distribution = lambda name: no_version(name) if missing(name) else distribution(name)\n"
        "iu.find_spec = lambda name, *a, **k: None if missing(name) else find_spec(name, *a, **k)\n"
        "from lightclf.cli import main\n"
        f"main({list(args)!r})\n"
    )
    env = {"PYTHONPATH": PYTHONPATH, "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_core_dependencies_leave_the_study_stack_to_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for needed in ("lightning>=2.6.1,<2.7", "numpy", "pyyaml", "jsonargparse"):
        assert needed in core
    for extra_only in ("scipy", "statsmodels", "matplotlib", "optuna", "wandb-workspaces", "onnx"):
        assert extra_only not in core
    extras = project["optional-dependencies"]
    assert {"study", "report", "export", "dev"} <= set(extras)
    assert any("optuna" in d for d in extras["study"]) and any("wandb-workspaces" in d for d in extras["report"])


def test_a_core_install_fits_and_report_names_its_extra(tmp_path):
    config = smoke_config(
        tmp_path,
        **{
            "trainer.max_epochs": 1, "trainer.limit_train_batches": 3,
            "data.class_path": "lightclf.data.FashionMNIST",
            "data.init_args": {"resolution": 28, "channels": 3, "batch_size": 32, "train_subset": 512, "test_subset": 128},
        },
    )  # fmt: skip
    fit = _core_only("fit", "--config", str(config))
    assert fit.returncode == 0, fit.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "smoke").iterdir()
    assert json.loads((folder / "results.json").read_text())["status"] == "finished"

    report = _core_only("report", "--study", "configs/study/fmnist_dilation.yaml", "--out", str(tmp_path / "r"))
    assert report.returncode == 2
    assert report.stderr.strip().splitlines() == [
        "lightclf: error: `lightclf report` needs scipy, which lightclf's [study] extra installs: "
        "pip install 'lightclf[study]'"
    ]
    tune = _core_only("tune", "--config", "configs/study/fmnist_tune_demo.yaml", "--dry-run")
    assert tune.returncode == 0  # a dry run reads YAML only
