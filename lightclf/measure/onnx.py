"""ONNX, the deployable format: export a net to a file (or bytes) and run it with onnxruntime.

``lightclf export`` writes and checks these files and the inference benchmark times the same sessions,
so it lives with the measuring code, which deployment (a tool layer) may import.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["export_onnx_model", "ort_providers", "ort_session", "onnx_session"]


def export_onnx_model(model: nn.Module, example: torch.Tensor, path: Path | None = None, dynamic_batch: bool = False):
    """Export ``model`` to ONNX: into ``path`` (returned), else in memory (the bytes returned).
    ``dynamic_batch`` keeps the batch size open (a deployable file)."""
    target = path if path is not None else io.BytesIO()
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python control flow; the output is checked instead
        torch.onnx.export(model.cpu(), (example.cpu(),), str(target) if path is not None else target,
                          input_names=["images"], output_names=["logits"], dynamic_axes=axes, dynamo=False)  # fmt: skip
    return path if path is not None else target.getvalue()


def ort_providers(device: torch.device | None = None) -> list[str]:
    """onnxruntime's providers for ``device``: CUDA's where this onnxruntime build has it, else the CPU's."""
    import onnxruntime as ort

    if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(source: str | Path | bytes, device: torch.device | None = None, with_provider: bool = False):
    """A function running an ONNX model (file or bytes) with onnxruntime: images in, logits out (on
    ``x``'s device). With ``with_provider`` also the provider that runs it (the label a row carries)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # onnxruntime's threads spin after each run by default, starving PyTorch (or another session)
    # timed right after it: an eager net measured 30 ms/img instead of ~0.5 beside a spinning session.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        source if isinstance(source, bytes) else str(source), options, providers=ort_providers(device)
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": x.cpu().contiguous().numpy()})[0]).to(x.device)

    return (run, session.get_providers()[0]) if with_provider else run


def onnx_session(
    model: nn.Module,
    example: torch.Tensor,
    path: Path | None = None,
    dynamic_batch: bool = False,
    device: torch.device | None = None,
    with_provider: bool = False,
):
    """Export ``model`` to ONNX (to ``path``, else in memory) and return its onnxruntime runner."""
    return ort_session(export_onnx_model(model, example, path, dynamic_batch), device, with_provider)
