"""`python -m lightclf export`: ONNX / TorchScript export and int8 post-training quantization.

Every export is checked against the PyTorch model on real images (max |logit difference|)
and timed; int8 is onnxruntime's static post-training quantization (QDQ, per-channel int8
weights, uint8 activations: the U8S8 kernels of AVX-512 VNNI), calibrated on training images
and evaluated on the test set through onnxruntime, against fp32 onnxruntime: a compression axis
the paper did not study. (FX-mode int8 in PyTorch was 3.5x *slower* than fp32 eager here.)
Figures go to ``<run dir>/export.json``, which `lightclf report` reads.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError, DataError
from lightclf.measure.accuracy import count_correct
from lightclf.measure.bench import alternating_rounds, time_batches
from lightclf.measure.complexity import inference_copy, state_dict_bytes
from lightclf.measure.onnx import export_onnx_model, onnx_session, ort_session
from lightclf.runs import ExportCheck, ExportFigures, Fp32Figures, Int8Figures, RunRecord
from lightclf.training.checkpoints import LoadedRun, datamodule_from_run, load_run

__all__ = ["export_onnx", "export_torchscript", "quantize_int8", "main"]


def _latency_ms(fn, x: torch.Tensor, repeats: int = 5, iters: int = 5) -> float:
    """Median per-image latency (ms) of ``fn`` on batch ``x``."""
    with torch.inference_mode():
        fn(x)
        times = [time_batches(fn, x, iters) for _ in range(repeats)]
    return 1000 * statistics.median(times) / len(x)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> ExportCheck:
    """Export the classifier to ONNX and check it against PyTorch on the same images."""
    model = model.eval()
    run = onnx_session(model, example, path, dynamic_batch=True)
    return _check_export(model, run, example, path, torch_ms_per_image=round(_latency_ms(model, example), 4))


def _check_export(
    model: nn.Module, exported, example: torch.Tensor, path: Path, torch_ms_per_image: float | None = None
) -> ExportCheck:
    """How far the exported model's logits are from PyTorch's on ``example``, its size and speed."""
    with torch.inference_mode():
        expected = model(example)
        got = torch.as_tensor(exported(example))
    return ExportCheck(
        path=str(path),
        size_mb=round(path.stat().st_size / 1e6, 3),
        max_abs_diff=float((got - expected).abs().max()),
        same_top1=float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
        ms_per_image=round(_latency_ms(exported, example), 4),
        torch_ms_per_image=torch_ms_per_image,
    )


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> ExportCheck:
    """Export the classifier to TorchScript and check it against PyTorch on the same images."""
    model = model.eval()
    with torch.inference_mode():
        traced = torch.jit.trace(model, example)
        traced = torch.jit.freeze(traced)
    traced.save(str(path))
    return _check_export(model, torch.jit.load(str(path)), example, path)


def quantize_int8(fp32_onnx: Path, int8_onnx: Path, calibration: list[torch.Tensor]) -> Path:
    """Static int8 quantization of an ONNX file with onnxruntime (QDQ, per-channel, U8S8)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": batch.cpu().contiguous().numpy()} for batch in calibration])

        def get_next(self):
            return next(self.batches, None)

    prepared = int8_onnx.with_suffix(".pre.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_onnx), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_onnx),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    prepared.unlink(missing_ok=True)
    return int8_onnx


@torch.inference_mode()
def _accuracy(model, loader, datamodule) -> float:
    correct = total = 0
    for batch in loader:
        x, y = datamodule.on_after_batch_transfer(batch, 0)  # normalises tensor batches, passes others
        correct += count_correct(torch.as_tensor(model(x)), y)[0]
        total += len(y)
    return correct / max(total, 1)


def _interleaved_ms(fns: dict[str, Any], x: torch.Tensor, rounds: int = 7, iters: int = 5) -> dict[str, float]:
    """Median per-image latency of each function, timed in alternating rounds (CPU drift)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn(x)
        alternating_rounds(list(fns), rounds, lambda name: times[name].append(time_batches(fns[name], x, iters)))
    return {name: round(1000 * statistics.median(t) / len(x), 4) for name, t in times.items()}


def _example(run: LoadedRun, datamodule=None, batch: int = 8) -> tuple[torch.Tensor, str]:
    """Real test images through the run's preprocessing, for the export checks (from ``datamodule``
    when the caller has the test split loaded already); random inputs when the run's data cannot be
    loaded here (a checkpoint that travelled without its data set)."""
    try:
        if datamodule is None:
            datamodule = datamodule_from_run(run, batch_size=batch)
            datamodule.setup("test")
        images = next(iter(datamodule.test_dataloader()))
        return datamodule.on_after_batch_transfer(images, 0)[0][:batch], "test images"
    except (ConfigError, DataError, OSError, StopIteration):
        return torch.randn(batch, run.in_chans, run.resolution, run.resolution), "random inputs"


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--format", nargs="+", default=["onnx"], choices=["onnx", "torchscript", "int8"])
    parser.add_argument("--out", help="output folder (default: <run dir>/export)")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--test-subset", type=int, default=0, help="test images for the int8 accuracy (0 = all)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| accepted for ONNX/TS")
    args = parser.parse_args(argv)
    run = load_run(args.ckpt)
    out = Path(args.out) if args.out else (run.run_dir or Path(args.ckpt).resolve().parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    network = inference_copy(run.module.network)
    stem = Path(args.ckpt).stem
    failures = []
    datamodule = None
    if "int8" in args.format:  # int8 needs the data (calibration, accuracy); the export checks share it
        datamodule = datamodule_from_run(run, test_subset=args.test_subset)
        datamodule.setup("fit")
        datamodule.setup("test")
    example, checked_on = _example(run, datamodule)
    onnx = export_onnx(network, example, out / f"{stem}.onnx") if "onnx" in args.format else None
    torchscript = export_torchscript(network, example, out / f"{stem}.pt") if "torchscript" in args.format else None
    fp32 = int8 = None
    for fmt, check in (("onnx", onnx), ("torchscript", torchscript)):
        if check is not None and check.max_abs_diff > args.tolerance:
            failures.append(f"{fmt} differs from PyTorch by {check.max_abs_diff:.2e} > {args.tolerance:g}")
    if datamodule is not None:
        calibration = []
        for batch in datamodule.train_dataloader():
            calibration.append(datamodule.on_after_batch_transfer(batch, 0)[0])
            if len(calibration) >= args.calibration_batches:
                break
        fp32_path = out / f"{stem}.onnx"
        if onnx is None:
            export_onnx_model(network, calibration[0], fp32_path, dynamic_batch=True)
        int8_path = quantize_int8(fp32_path, out / f"{stem}.int8.onnx", calibration)
        fp32_ort, int8_ort = ort_session(fp32_path), ort_session(int8_path)
        loader = datamodule.test_dataloader()
        ms = _interleaved_ms({"eager": network, "fp32": fp32_ort, "int8": int8_ort}, calibration[0])
        fp32 = Fp32Figures(
            top1=_accuracy(fp32_ort, loader, datamodule),
            size_mb=round(state_dict_bytes(network) / 1e6, 3),
            file_mb=round(fp32_path.stat().st_size / 1e6, 3),
            ms_per_image=ms["fp32"],  # onnxruntime fp32: the baseline int8 must beat
            eager_ms_per_image=ms["eager"],
        )
        int8 = Int8Figures(
            top1=_accuracy(int8_ort, loader, datamodule),
            file_mb=round(int8_path.stat().st_size / 1e6, 3),
            ms_per_image=ms["int8"],
            speedup_vs_fp32_onnxruntime=round(ms["fp32"] / ms["int8"], 3),
            calibration_images=sum(len(c) for c in calibration),
            method="onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
        )
    figures = ExportFigures(str(run.ckpt_path), run.resolution, checked_on, onnx, torchscript, fp32, int8)
    # Into the run's record (which `report` reads); a checkpoint without its run folder gets one beside --out.
    (run.run or RunRecord(folder=out.parent)).write(RunRecord.EXPORT, figures.as_json())
    print(json.dumps(figures.as_json(), indent=2))
    if failures:
        raise ConfigError("export check failed: " + "; ".join(failures))
