"""The private parts of other libraries that lightclf relies on, all in one place.

Each is used because no public API gives the same, and each has a test in
``tests/test_library_hooks.py`` that fails loudly (not subtly) when a new release changes it.
Torch-free at import; the libraries load on first use.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["JSONARGPARSE_KEY_LINE", "averaged_model", "last_update_step", "set_last_update_step", "offline_report_spec"]

# jsonargparse reports a bad value as prose, the first line naming the parser key; no structured
# error carries the key, so lightclf's one-line errors read it from this line.
JSONARGPARSE_KEY_LINE = re.compile(r'Parser key "([^"]+)":\s*(.*)$')


# Lightning's EMAWeightAveraging keeps the averaged model and the step of its last update in
# private attributes, with no accessor: lightclf's EMA replaces the per-step update (the
# library's reads its count on the host, a device sync every step) and so needs both.
def averaged_model(callback: Any) -> Any:
    """The callback's ``torch.optim.swa_utils.AveragedModel`` (None before ``setup``)."""
    return callback._average_model


def last_update_step(callback: Any) -> int:
    """The step of the callback's last EMA update (Lightning checkpoints it)."""
    return callback._latest_update_step


def set_last_update_step(callback: Any, step: int) -> None:
    """Set the step of the callback's last EMA update (lightclf's EMA updates it itself)."""
    callback._latest_update_step = step


@contextlib.contextmanager
def _offline_project_lookup() -> Iterator[None]:
    # wandb-workspaces looks each runset's project up over GraphQL while serialising a report and
    # has no offline mode: answer with an empty internal id (W&B sets it when the report is saved).
    from wandb_workspaces.reports.v2 import interface

    saved = interface._get_api, interface.execute_graphql
    interface._get_api = lambda: None
    interface.execute_graphql = lambda api, query, variables: {"project": {"internalId": ""}}
    try:
        yield
    finally:
        interface._get_api, interface.execute_graphql = saved


def offline_report_spec(report: Any) -> dict[str, Any]:
    """A wandb-workspaces Report as the JSON W&B stores, built without contacting W&B (the
    library's ``_to_model`` is what ``Report.save`` sends)."""
    with _offline_project_lookup():
        return report._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
