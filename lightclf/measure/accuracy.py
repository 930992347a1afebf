"""Top-k accuracy counts: the one top-k of the per-epoch test curve and the export checks (the
module's own metrics are torchmetrics')."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["count_correct"]


def count_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1,)) -> list[int]:
    """How many rows of ``logits`` have their target among the top k, for each k (k capped at the
    number of classes)."""
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = top == targets[:, None]
    return [int(hits[:, : min(k, logits.shape[-1])].any(dim=-1).sum()) for k in ks]
