"""`lightclf erf --ckpt CKPT`: the effective receptive field of a checkpoint's weights on its test images."""

from __future__ import annotations

import json

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.measure.receptive_field import effective_receptive_field
from lightclf.runs import RunRecord
from lightclf.training.checkpoints import datamodule_from_run, load_run
from lightclf.training.evaluation import probe_images

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf erf", description=__doc__.splitlines()[0].partition(": ")[2])
    parser.add_argument(
        "--ckpt", required=True, help="a lightclf checkpoint (its run folder's config.yaml rebuilds the data)"
    )
    parser.add_argument("--images", type=int, default=256, help="test images to average over (default 256)")
    parser.add_argument("--heatmap", action="store_true", help="print the heat map too")
    args = parser.parse_args(argv)
    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    run = load_run(args.ckpt)
    datamodule = datamodule_from_run(run)
    field = effective_receptive_field(run.module.network, probe_images(datamodule, args.images, run.module.device))
    if run.run is not None:
        RunRecord(folder=run.run.folder).write(RunRecord.ERF, field.as_dict())
    shown = field.as_dict() if args.heatmap else {k: v for k, v in field.as_dict().items() if k != "heatmap"}
    print(json.dumps(shown, indent=2))
