"""Where a study's tuning lives: one Optuna journal file, shared by every tuner process.

``JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))``: the journal is appended under a
lock with fsync, which several processes (two shells, ``--jobs``, SLURM array tasks on a shared file
system) can share; SQLite is "not recommended for parallel optimization" in Optuna's own docs (whole-
file locking, unsafe on NFS). The open-file lock (an ``O_EXCL`` lock file, released by force after its
grace period when its holder died) is the one Optuna documents for NFS.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lightclf.errors import ConfigError
from lightclf.study.spec import Study
from lightclf.study.tuning.space import TuneSpec

__all__ = ["storage_path", "check_storage", "open_storage"]


def storage_path(study: Study, tune: TuneSpec) -> Path:
    """The journal file: ``tune.storage``, else ``<save_dir>/tuning/<study>.journal`` (beside, not among, the
    run folders)."""
    return Path(tune.storage) if tune.storage else Path(study.save_dir) / "tuning" / f"{study.name}.journal"


def check_storage(path: Path) -> None:
    """Fail in one line, creating nothing, when the journal cannot be written at ``path``."""
    import os

    if path.exists():
        if not path.is_file() or not os.access(path, os.W_OK):
            raise ConfigError(f"tune storage {path} cannot be written (not a writable file)")
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"tune storage {path} cannot be written ({ancestor} is not a writable folder)")


def open_storage(path: Path):
    """The Optuna journal storage at ``path`` (created with its folder; an unwritable place is one line)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    check_storage(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
