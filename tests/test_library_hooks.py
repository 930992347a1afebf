"""One test per private hook in lightclf.library_hooks: each fails when the library changes it."""

from __future__ import annotations

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
    # Lightning's own update writes the same attributes (what lightclf's EMA replaces): a real fit of a
    # tiny model with Lightning's EMAWeightAveraging leaves its average and its last update step there.
    import lightning as L
    import torch
    from torch.optim.swa_utils import AveragedModel
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(24, 4), torch.randint(0, 2, (24,))), batch_size=8)
    ema = EMAWeightAveraging(decay=0.5)
    trainer = L.Trainer(max_epochs=1, callbacks=[ema], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(Tiny(), data)
    assert isinstance(ema, WeightAveraging) and isinstance(library_hooks.averaged_model(ema), AveragedModel)
    assert library_hooks.last_update_step(ema) == trainer.global_step == 3  # updated after each of the 3 steps


def test_wandb_workspaces_serialises_offline_through_the_patched_lookup():
    pytest.importorskip("wandb_workspaces")
    from wandb_workspaces.reports.v2 import interface as wr

    assert callable(wr._get_api) and callable(wr.execute_graphql)
    report = wr.Report(project="lightclf-study", entity="someone", title="t",
                       blocks=[wr.PanelGrid(runsets=[wr.Runset(project="lightclf-study", entity="someone")])])  # fmt: skip
    spec = library_hooks.offline_report_spec(report)
    assert spec["displayName"] == "t" and spec["spec"]["blocks"], spec
    assert wr._get_api is not None and wr.execute_graphql.__name__ != "<lambda>"  # restored afterwards
