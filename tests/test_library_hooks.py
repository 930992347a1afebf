"""One test per private hook in lightclf.library_hooks: each fails when the library changes it."""

from __future__ import annotations

import inspect

import pytest

from lightclf import library_hooks


def test_jsonargparse_names_the_key_on_the_first_line_of_its_report():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--epochs", type=int)
    with pytest.raises(Exception) as caught:  # jsonargparse's ArgumentError
        parser.parse_args(["--epochs", "many"])
    first = str(caught.value).strip().splitlines()[0]
    match = library_hooks.JSONARGPARSE_KEY_LINE.match(first)
    assert match and match.group(1) == "epochs", first


def test_lightning_ema_keeps_its_average_and_last_update_where_lightclf_reads_them():
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.callbacks.weight_averaging import WeightAveraging

    callback = EMAWeightAveraging()
    assert library_hooks.averaged_model(callback) is None and library_hooks.last_update_step(callback) == 0
    library_hooks.set_last_update_step(callback, 7)
    assert callback.state_dict()["latest_update_step"] == 7  # the attribute is the one Lightning checkpoints
    # Lightning's own update reads and writes the same attributes (what lightclf's EMA replaces).
    update = inspect.getsource(WeightAveraging.on_train_batch_end)
    assert "self._latest_update_step" in update and "self._average_model.update_parameters" in update
    assert "self._average_model = AveragedModel(" in inspect.getsource(WeightAveraging.setup)


def test_wandb_workspaces_serialises_offline_through_the_patched_lookup():
    pytest.importorskip("wandb_workspaces")
    from wandb_workspaces.reports.v2 import interface as wr

    assert callable(wr._get_api) and callable(wr.execute_graphql)
    report = wr.Report(project="lightclf-study", entity="someone", title="t",
                       blocks=[wr.PanelGrid(runsets=[wr.Runset(project="lightclf-study", entity="someone")])])  # fmt: skip
    spec = library_hooks.offline_report_spec(report)
    assert spec["displayName"] == "t" and spec["spec"]["blocks"], spec
    assert wr._get_api is not None and wr.execute_graphql.__name__ != "<lambda>"  # restored afterwards
