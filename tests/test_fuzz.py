"""CLI fuzz: malformed configs, flags, paths, checkpoints, images and study files each end in one
``lightclf: error:`` line with exit 2 (never a traceback), and leave earlier run folders untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import run_lightclf, smoke_config

KW = '{"width_multiplier": 0.25, "small_input": true}'


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bad")
    files = {
        "yaml": tmp / "broken.yaml",
        "notckpt": tmp / "notes.ckpt",
        "emptyckpt": tmp / "empty.ckpt",
        "badimage": tmp / "broken.jpg",
        "textimage": tmp / "photo.png",
        "study_yaml": tmp / "study_broken.yaml",
        "study_key": tmp / "study_key.yaml",
        "study_base": tmp / "study_base.yaml",
        "study_run": tmp / "study_run.yaml",
        "study_list": tmp / "study_list.yaml",
        "dir": tmp / "a_folder",
    }
    files["yaml"].write_text("model: {network: ddsnet\ntrainer: [")
    files["notckpt"].write_text("not a checkpoint")
    files["emptyckpt"].write_bytes(b"")
    files["badimage"].write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    files["textimage"].write_text("hello")
    files["study_yaml"].write_text("name: x\ngrid: {network: [ddsnet\n")
    files["study_key"].write_text(yaml.safe_dump({"name": "x", "base_config": "configs/quickstart.yaml",
                                                  "grid": {"network": ["ddsnet"]}, "sedes": [0]}))  # fmt: skip
    files["study_base"].write_text(
        yaml.safe_dump({"name": "x", "base_config": "missing.yaml", "grid": {"network": ["ddsnet"]}})
    )
    files["study_run"].write_text(yaml.safe_dump({"name": "x", "base_config": "configs/quickstart.yaml",
                                                  "grid": {"network": ["ddsnet"]}, "runs": [{"resolution": 28}]}))  # fmt: skip
    files["study_list"].write_text("- just\n- a list\n")
    files["dir"].mkdir()
    return files


def _cases(config: Path, ckpt: Path, f: dict[str, Path]) -> list[tuple[str, list[str]]]:
    c, k = str(config), str(ckpt)
    fit = ["fit", "--config", c]
    return [
        # configs and flags of `lightclf fit`
        ("broken yaml", ["fit", "--config", str(f["yaml"])]),
        ("missing config", ["fit", "--config", "nope/config.yaml"]),
        ("config is a folder", ["fit", "--config", str(f["dir"])]),
        ("unknown option", [*fit, "--model.netwrk", "ddsnet"]),
        ("wrong type", [*fit, "--trainer.max_epochs", "many"]),
        ("unknown network", [*fit, "--model.network", "ddsnett"]),
        ("width 0", [*fit, "--model.network_kwargs", '{"width_multiplier": 0}']),
        ("width negative", [*fit, "--model.network_kwargs", '{"width_multiplier": -1}']),
        ("dilation 0", [*fit, "--model.network_kwargs", '{"width_multiplier": 0.25, "dilation": 0}']),
        ("schedule length", [*fit, "--model.network_kwargs", '{"dilation_schedule": [1, 2]}']),
        ("kwargs not json", [*fit, "--model.network_kwargs", "{width: 1"]),
        ("unknown kwarg", [*fit, "--model.network_kwargs", '{"bogus": 1}']),
        ("resolution too small", [*fit, "--model.network_kwargs", KW, "--data.init_args.resolution", "2"]),
        ("resolution 0", [*fit, "--data.init_args.resolution", "0"]),
        ("channels 2", [*fit, "--data.init_args.channels", "2"]),
        ("batch 0", [*fit, "--data.init_args.batch_size", "0"]),
        ("val fraction 0", [*fit, "--data.init_args.val_fraction", "0"]),
        ("val fraction 1", [*fit, "--data.init_args.val_fraction", "1"]),
        ("crop padding", [*fit, "--data.init_args.crop_padding", "-1"]),
        ("data class", [*fit, "--data", "lightclf.data.NoSuchData"]),
        ("missing data dir", [*fit, "--data", "lightclf.data.FashionMNIST", "--data.init_args.data_dir", "/nope"]),
        ("ema decay", [*fit, "--model.ema_decay", "1.0"]),
        ("label smoothing", [*fit, "--model.label_smoothing", "-0.1"]),
        ("mixup", [*fit, "--model.mixup_alpha", "-0.2"]),
        ("optimizer class", [*fit, "--model.optimizer", "torch.optim.NoSuchOpt"]),
        ("callback class", [*fit, "--trainer.callbacks+=lightclf.training.resume.NoSuchCallback"]),
        # paths and checkpoints
        ("resume missing ckpt", [*fit, "--ckpt_path", "/nope/last.ckpt"]),
        ("resume text ckpt", [*fit, "--ckpt_path", str(f["notckpt"])]),
        ("resume empty ckpt", [*fit, "--ckpt_path", str(f["emptyckpt"])]),
        ("ckpt of another net", ["test", "--config", c, "--model.network", "ddsnet_nodilation", "--ckpt_path", k]),
        ("export missing ckpt", ["export", "--ckpt", "/nope/x.ckpt"]),
        ("export text ckpt", ["export", "--ckpt", str(f["notckpt"])]),
        ("export bad format", ["export", "--ckpt", k, "--format", "tflite"]),
        ("predict missing ckpt", ["predict", "--ckpt", "/nope/x.ckpt", "--input", str(f["badimage"])]),
        # images
        ("predict missing image", ["predict", "--ckpt", k, "--input", "/nope/photo.jpg"]),
        ("predict corrupt image", ["predict", "--ckpt", k, "--input", str(f["badimage"])]),
        ("predict text as image", ["predict", "--ckpt", k, "--input", str(f["textimage"])]),
        ("predict empty folder", ["predict", "--ckpt", k, "--input", str(f["dir"])]),
        ("predict topk 0", ["predict", "--ckpt", k, "--input", str(f["badimage"]), "--topk", "0"]),
        # study files and tools
        ("study missing", ["study", "--config", "/nope/study.yaml"]),
        ("study broken yaml", ["study", "--config", str(f["study_yaml"])]),
        ("study unknown key", ["study", "--config", str(f["study_key"])]),
        ("study missing base", ["study", "--config", str(f["study_base"])]),
        ("study run without network", ["study", "--config", str(f["study_run"])]),
        ("study not a mapping", ["study", "--config", str(f["study_list"])]),
        ("study unknown point", ["study", "--config", "configs/study/fmnist_fast.yaml", "--point", "run=nope"]),
        ("report missing study", ["report", "--study", "/nope/study.yaml"]),
        ("report bad wandb path", ["report", "--study", str(f["study_key"]), "--wandb-report", "no-slash"]),
        ("bench unknown net", ["bench", "--models", "ddsnett"]),
        ("bench-train malformed", ["bench-train", "--models", "ddsnet:width_multiplier"]),
        ("bench bad flag", ["bench", "--repeats", "several"]),
    ]


# One case per command family also runs as its own process: the in-process cases prove the
# message, these prove what a shell sees (exit status 2, one stderr line, no traceback).
SUBPROCESS_CASES = ("broken yaml", "unknown network", "export text ckpt", "predict corrupt image", "study broken yaml")


# The command words and the shared smoke config say nothing about a case's own mistake.
_COMMON = {
    "fit",
    "test",
    "export",
    "predict",
    "study",
    "report",
    "bench",
    "bench-train",
    "--config",
    "--ckpt",
    "--input",
}


def _names_cause(message: str, args: list[str], config: Path) -> bool:
    """True when ``message`` names something the case itself got wrong: a flag's key (its last dotted
    part), a value, or a file's name, among the arguments other than the command and shared config."""
    text = message.lower()
    tokens = set()
    for arg in args:
        if arg in _COMMON or arg == str(config):
            continue
        key = arg.lstrip("-").split("+=")[0]
        tokens |= {key.rsplit(".", 1)[-1], Path(arg).name, arg.split("+=")[-1].rsplit(".", 1)[-1]}
    return any(token and token.lower() in text for token in tokens)


def _one_error_line(code: int | None, stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return (
        code == 2
        and "Traceback" not in stderr
        and bool(lines)
        and lines[-1].startswith("lightclf: error:")
        and sum(line.startswith("lightclf: error:") for line in lines) == 1
    )


def test_cli_fuzz_one_line_errors(tmp_path, trained_checkpoint, bad_files, run_here):
    config = smoke_config(tmp_path)
    earlier_run = trained_checkpoint.parent.parent
    before = _fingerprint(earlier_run)
    cases = _cases(config, trained_checkpoint, bad_files)
    assert len(cases) >= 30
    failures, messages = [], {}
    for name, args in cases:
        result = run_here(*args)  # in the repo root: the cases name repo configs by relative path
        if not _one_error_line(result.returncode, result.stderr):
            failures.append(f"{name}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
        else:
            messages[name] = result.stderr.strip().splitlines()[-1]
    for name, args in cases:
        if name in SUBPROCESS_CASES:
            result = run_lightclf(*args, timeout=300)
            if not _one_error_line(result.returncode, result.stderr):
                failures.append(f"{name} (subprocess): exit {result.returncode}: {result.stderr.strip()[-400:]}")
            elif result.stderr.strip().splitlines()[-1] != messages.get(name):
                failures.append(f"{name}: the subprocess says {result.stderr.strip().splitlines()[-1]!r}")
    assert not failures, "\n".join(failures)
    # Each message names its cause: the flag, value or file the case got wrong appears in it.
    unnamed = [f"{name}: {messages[name]}" for name, args in cases if not _names_cause(messages[name], args, config)]
    assert not unnamed, "\n".join(unnamed)
    # Each case names its own problem: a catch-all message would repeat. (A few cases share one
    # problem on purpose, e.g. a missing --ckpt for export and for predict.)
    assert len(set(messages.values())) >= len(cases) - 5, sorted(messages.values())
    assert _fingerprint(earlier_run) == before  # nothing already trained was touched
    assert not list(tmp_path.glob("runs/**/*.ckpt"))  # and nothing was trained by any of them
