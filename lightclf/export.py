"""`python -m lightclf export`: ONNX / TorchScript export and int8 post-training quantization.

Every export is checked against the PyTorch model on real images (max |logit difference|)
and timed; int8 PTQ (FX graph mode, x86 backend) is calibrated on training images and
evaluated on the test set, a compression axis the paper did not study. Figures go to
``<run dir>/export.json``, which `lightclf report` reads.
"""

from __future__ import annotations

import io
import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightclf.bench import onnx_session, time_batches
from lightclf.checkpoints import LoadedRun, datamodule_from_run, load_run
from lightclf.complexity import inference_copy, state_dict_bytes
from lightclf.models import ConfigError
from lightclf.tool_args import ToolArgumentParser

__all__ = ["export_onnx", "export_torchscript", "quantize_int8", "main"]


def _latency_ms(fn, x: torch.Tensor, repeats: int = 5, iters: int = 5) -> float:
    """Median per-image latency (ms) of ``fn`` on batch ``x``."""
    with torch.inference_mode():
        fn(x)
        times = [time_batches(fn, x, iters) for _ in range(repeats)]
    return 1000 * statistics.median(times) / len(x)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    model = model.eval()
    run = onnx_session(model, example, path, dynamic_batch=True)
    return {**_check_export(model, run, example, path), "torch_ms_per_image": round(_latency_ms(model, example), 4)}


def _check_export(model: nn.Module, exported, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """How far the exported model's logits are from PyTorch's on ``example``, its size and speed."""
    with torch.inference_mode():
        expected = model(example)
        got = torch.as_tensor(exported(example))
    return {
        "path": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 3),
        "max_abs_diff": float((got - expected).abs().max()),
        "same_top1": float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
        "ms_per_image": round(_latency_ms(exported, example), 4),
    }


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    model = model.eval()
    with torch.inference_mode():
        traced = torch.jit.trace(model, example)
        traced = torch.jit.freeze(traced)
    traced.save(str(path))
    return _check_export(model, torch.jit.load(str(path)), example, path)


def quantize_int8(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    """Static post-training int8 quantization (FX graph mode, x86 backend)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    model = inference_copy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example_inputs=(calibration[0],))
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        return convert_fx(prepared)


@torch.inference_mode()
def _accuracy(model: nn.Module, loader, datamodule) -> float:
    correct = total = 0
    for batch in loader:
        x, y = datamodule.on_after_batch_transfer(batch, 0) if datamodule.tensor_batches else batch
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _serialized_mb(model: nn.Module, example: torch.Tensor) -> float:
    """Size of the TorchScript file a device would load (int8 weights packed)."""
    buffer = io.BytesIO()
    with torch.inference_mode():
        torch.jit.save(torch.jit.trace(model, example), buffer)
    return round(buffer.tell() / 1e6, 3)


def _example(run: LoadedRun, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, run.in_chans, run.resolution, run.resolution)


def main(argv: list[str] | None = None) -> None:
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
    record: dict[str, Any] = {"ckpt": str(run.ckpt_path), "resolution": run.resolution}
    failures = []
    if "onnx" in args.format:
        record["onnx"] = export_onnx(network, _example(run), out / f"{stem}.onnx")
    if "torchscript" in args.format:
        record["torchscript"] = export_torchscript(network, _example(run), out / f"{stem}.pt")
    for fmt in ("onnx", "torchscript"):
        if fmt in record and record[fmt]["max_abs_diff"] > args.tolerance:
            failures.append(f"{fmt} differs from PyTorch by {record[fmt]['max_abs_diff']:.2e} > {args.tolerance:g}")
    if "int8" in args.format:
        datamodule = datamodule_from_run(run, test_subset=args.test_subset)
        datamodule.setup("fit")
        datamodule.setup("test")
        calibration = []
        for batch in datamodule.train_dataloader():
            x = datamodule.on_after_batch_transfer(batch, 0)[0] if datamodule.tensor_batches else batch[0]
            calibration.append(x)
            if len(calibration) >= args.calibration_batches:
                break
        quantized = quantize_int8(network, calibration)
        example = calibration[0][:8]
        loader = datamodule.test_dataloader()
        record["fp32"] = {
            "top1": _accuracy(network, loader, datamodule),
            "size_mb": round(state_dict_bytes(network) / 1e6, 3),
            "file_mb": _serialized_mb(network, example),
            "ms_per_image": round(_latency_ms(network, calibration[0]), 4),
        }
        record["int8"] = {
            "top1": _accuracy(quantized, loader, datamodule),
            "size_mb": round(state_dict_bytes(quantized) / 1e6, 3),
            "file_mb": _serialized_mb(quantized, example),
            "ms_per_image": round(_latency_ms(quantized, calibration[0]), 4),
            "calibration_images": sum(len(c) for c in calibration),
        }
        traced = torch.jit.trace(quantized, example)
        traced.save(str(out / f"{stem}.int8.pt"))
    (out.parent / "export.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    if failures:
        raise ConfigError("export check failed: " + "; ".join(failures))
