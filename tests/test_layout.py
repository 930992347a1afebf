"""The house: library below tools below the CLI, no import cycles, cheap tools stay cheap."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import PYTHONPATH, REPO

PACKAGE = REPO / "lightclf"

# Lower layers never import higher ones; the two tool packages never import each other.
LAYERS = {
    "lightclf.errors": 0, "lightclf.runs": 0, "lightclf.cli_args": 0, "lightclf.geometry": 0, "lightclf.tables": 0, "lightclf.factors": 0,
    "lightclf.library_hooks": 0, "lightclf.host_allocator": 0, "lightclf.devices": 0,
    "lightclf.models": 1,
    "lightclf.data": 2,
    "lightclf.measure": 3,
    "lightclf.training": 4,
    "lightclf.study": 5, "lightclf.deploy": 5,
    "lightclf.cli": 6, "lightclf.__main__": 6, "lightclf": 6,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> tuple[str, int]:
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return module, LAYERS[module]


def _imports(path: Path) -> set[str]:
    """Every lightclf module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("lightclf")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightclf"):
            found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def test_no_upward_imports_and_tools_apart():
    upward = []
    for module, imported in _graph().items():
        home, layer = _layer(module)
        for target in imported:
            target_home, target_layer = _layer(target)
            if target_layer > layer or (layer == target_layer == 5 and target_home != home):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


MAX_LINES = 400  # a file past this has more than one job (the house rule)


def test_every_module_has_at_most_400_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            if target not in graph or target == module:
                continue
            assert state.get(target) != 1, " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_study_dry_run_report_and_errors_do_not_load_torch(tmp_path):
    # A study of its own (fresh run folder, no records): the committed study's runs are archived as
    # finished, so its dry run would only print "skipped" lines and no fit command.
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: dry\nbase_config: {REPO / 'configs/study/fmnist_fast_base.yaml'}\nsave_dir: {tmp_path / 'runs'}\n"
        "seeds: [0, 1]\ngrid: {network: [ddsnet], small_input: [true], width_multiplier: [0.25], dilation: [2, 1]}\n"
    )
    # One run was interrupted after 3 of its 10 epochs: the dry run says how far it got.
    from lightclf.runs import RunRecord
    from lightclf.study.spec import load_study

    interrupted = load_study(study).specs()[0]
    record = RunRecord(folder=tmp_path / "runs" / "lightclf-study" / interrupted.run_id)
    record.update(status="interrupted", epoch=2, max_epochs=10, val_per_epoch=[{"epoch": 2, "val/acc1": 0.9}],
                  saved_position={"epoch": 3, "batches_done": 412, "epoch_batches": 1687, "global_step": 5473,
                                  "saved_at": time.time() - 60})  # fmt: skip
    record.last_ckpt.parent.mkdir(parents=True)
    record.last_ckpt.touch()
    os.utime(record.last_ckpt, (1_000, 1_000))  # its epoch's end; then a SIGTERM stopped it mid-epoch
    stopped = record.checkpoints / "interrupted.ckpt"
    stopped.touch()
    code = (
        "import sys\n"
        "from lightclf.cli import main\n"
        "from lightclf.errors import ConfigError\n"
        f"main(['study', '--config', {str(study)!r}, '--dry-run'])\n"
        # the question report reads DDSNet's geometry (lightclf/geometry.py: beside models/, see why there)
        f"main(['report', '--study', 'configs/study/fmnist_dilation.yaml', '--out', {str(tmp_path / 'out')!r}])\n"
        "try:\n    main(['fitt'])\nexcept SystemExit as exit_:\n    assert exit_.code == 2\n"  # an unknown command
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('no torch')\n"
    )
    env = {"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no torch" in result.stdout and result.stderr.count("python -m lightclf fit") == 4
    # It resumes from the newer checkpoint (mid-epoch resume is exact), the stop's, not the epoch's end ...
    note = "(3 of 10 epochs and 412/1687 batches of epoch 4 done, val top-1 90.00% after epoch 3)"
    assert f"resuming from {stopped} {note}" in result.stderr
    assert f"--ckpt_path {stopped}" in result.stderr
    os.utime(stopped, (500, 500))  # ... and from last.ckpt once a resumed fit has written a newer one
    assert record.resume_ckpt == record.last_ckpt
    # A file older than the recorded save is not that save's (it failed: a full disk): no mid-epoch part.
    from lightclf.study.execution import progress_note

    assert progress_note(RunRecord.read(record.folder)) == " (3 of 10 epochs done, val top-1 90.00% after epoch 3)"


def test_the_schedules_test_walls_name_tests_that_exist():
    """tests/scheduling.py orders the suite by each test's wall time; a renamed test drops out of it
    silently (counted 1 s, scheduled last, where a 40 s test stretches the wall)."""
    from scheduling import WALL_S

    for node in WALL_S:
        path, name = node.split("::")
        source = (REPO / "tests" / path).read_text()
        function, _, case = name.partition("[")
        assert f"def {function}(" in source, node
        case = case.rstrip("]")  # a parametrized case: its id is in the file, or names a shipped config
        assert not case or case in source or any(REPO.glob(f"configs/**/{case}.yaml")), node
