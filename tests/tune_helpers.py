"""Test helper for the tuner: a stand-in fit process (no torch) whose per-epoch validation top-1 is a
known function of the learning rate, written to the run folder the way a fit writes it."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

GOOD_LR = 0.1


def stand_in_score(lr: float, epoch: int) -> float:
    """Validation top-1 after ``epoch``: best at GOOD_LR, falling off with log distance from it."""
    return 0.9 - 0.3 * abs(math.log10(lr) - math.log10(GOOD_LR)) + 0.01 * epoch


def _arg(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def stand_in_fit(args: list[str]) -> int:
    """What the tuner reads of a fit, written the way a fit writes it: results.json in the run folder
    with ``max_epochs`` and ``val_per_epoch``, a ``last.ckpt`` per epoch (a resumed fit starts after
    the epochs it has). ``STANDIN_EPOCH_SECONDS`` paces the epochs; ``STANDIN_MARKER`` is created
    when the first epoch starts (a test kills there)."""
    from lightclf.runs import RunRecord, run_path

    folder = run_path(
        _arg(args, "--trainer.logger.init_args.save_dir"),
        _arg(args, "--trainer.logger.init_args.project"),
        _arg(args, "--trainer.logger.init_args.id"),
    )
    lr = float(_arg(args, "--model.optimizer.init_args.lr"))
    epochs = int(_arg(args, "--trainer.max_epochs", "3"))
    pace = float(os.environ.get("STANDIN_EPOCH_SECONDS", "0.2"))
    record = RunRecord.read(folder)
    history = list(record.val_per_epoch) if "--ckpt_path" in args else []
    record.update(status="running", max_epochs=epochs, val_per_epoch=history)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    marker = os.environ.get("STANDIN_MARKER")
    for epoch in range(len(history), epochs):
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(folder))
        time.sleep(pace)
        history.append({"epoch": epoch, "val/acc1": stand_in_score(lr, epoch)})
        record.update(epoch=epoch, val_per_epoch=history)
        (folder / "checkpoints").mkdir(exist_ok=True)
        (folder / "checkpoints" / "last.ckpt").write_text(str(epoch))
    record.update(status="fit_done")
    return 0


if __name__ == "__main__":
    sys.exit(stand_in_fit(sys.argv[2:]))  # argv[1] is "fit"
