"""A dilated 3x3 depthwise conv that trains as fast as an undilated one on CPU.

oneDNN runs the *forward* of a dilated depthwise conv as fast as the undilated one, but its
backward leaves the fast path (input grad ~3-10x, weight grad ~4-40x slower at the shapes of
DDSNet's late stages). Dilation adds no MACs, so that cost is an artefact of the library. The
fast path keeps oneDNN's forward and replaces the backward:

* input gradient: for stride 1 and padding = dilation, the transposed conv equals a *forward*
  dilated depthwise conv of the output gradient with the kernel rotated by 180 degrees;
* weight gradient: a small C++ kernel (``csrc/dw3x3_grad_weight.cpp``), JIT-compiled once with
  torch's cpp_extension (``-march=native``) and cached under ``$TORCH_EXTENSIONS_DIR`` (default
  ``~/.cache/torch_extensions``) in a folder named by what the binary depends on: the CPU's
  instruction-set flags, the kernel's source, and the torch and Python it is built against.

It is used only where it applies (CPU, float32 or bf16 autocast, grad enabled, 3x3, stride 1,
padding = dilation > 1, no bias); everything else, eval, export and GPUs included, runs
``nn.Conv2d`` unchanged. Under bf16 autocast the convs run in bf16, as autocast would run them, and
the weight gradient is accumulated in float32. If the kernel cannot be built (no C++ compiler), a one-time warning
says so and the layer falls back to PyTorch's own backward. ``LIGHTCLF_FAST_DILATED=0`` turns
the fast path off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sysconfig
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DilatedDepthwiseConv2d", "fast_dilated_available"]

_SOURCE = Path(__file__).with_name("csrc") / "dw3x3_grad_weight.cpp"
_lock = threading.Lock()
_state: dict[str, bool] = {}


def fast_dilated_available() -> bool:
    """Build (once per machine, ~10 s) and load the weight-gradient kernel; False if it cannot be."""
    if "ok" in _state:
        return _state["ok"]
    with _lock:
        if "ok" in _state:
            return _state["ok"]
        if os.environ.get("LIGHTCLF_FAST_DILATED", "1") == "0":
            _state["ok"] = False
            return False
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "no CUDA runtime is found" (logged at import): irrelevant for a CPU op
        try:
            _state["ok"] = _build()
        except Exception as err:  # no compiler, no headers, read-only cache: fall back, never fail a fit
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"lightclf: fast dilated-conv kernel unavailable ({first_line[:200]}); "
                "dilated depthwise convs train with PyTorch's slower backward",
                stacklevel=2,
            )
            _state["ok"] = False
        finally:
            quiet.setLevel(level)
    return _state["ok"]


def cpu_signature() -> str:
    """A short hash of this CPU's architecture and instruction-set flags. The kernel is compiled with
    ``-march=native``, so its build is named by it: cluster nodes with other CPUs sharing one
    ``~/.cache/torch_extensions`` never load each other's build (an older CPU would die of SIGILL)."""
    features = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
        features += " " + " ".join(sorted(flags.partition(":")[2].split()))
    except OSError:  # not Linux: the processor's name is the best available stand-in
        features += " " + platform.processor()
    return hashlib.sha1(features.encode()).hexdigest()[:10]


def build_folder() -> Path:
    """Where the kernel is built and cached: one folder per (CPU flags, source, torch install, Python).

    cpp_extension's own default names a build by its name alone and writes the source's absolute
    path and the interpreter's include paths into it, so two checkouts or two virtualenvs sharing
    ``~/.cache/torch_extensions`` rebuilt over each other on every first use (13-46 s each, measured
    here), replacing the library under a process that was about to load it. A folder per what the
    binary depends on, holding its own copy of the source, is shared exactly where it can be."""
    source = _SOURCE.read_bytes()
    depends_on = b"\0".join(
        [cpu_signature().encode(), source, torch.__version__.encode(), str(Path(torch.__file__).parent).encode(),
         sysconfig.get_paths()["include"].encode()]
    )  # fmt: skip
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    folder = root / f"lightclf_dw3x3_{hashlib.sha1(depends_on).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / _SOURCE.name
    if not copy.exists() or copy.read_bytes() != source:  # atomic: a concurrent builder reads all or none
        partial = folder / f".{_SOURCE.name}.{os.getpid()}"
        partial.write_bytes(source)
        partial.replace(copy)
    return folder


def _build() -> bool:
    from torch.utils.cpp_extension import load

    folder = build_folder()
    load(
        folder.name,
        [str(folder / _SOURCE.name)],
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )
    return hasattr(torch.ops.lightclf_dw, "dw3x3_grad_weight")


class _DilatedDepthwise3x3(torch.autograd.Function):
    """oneDNN's forward; the fast backward. ``compute``: the dtype the convs run in (float32, or bfloat16
    under CPU autocast, as autocast would run ``nn.Conv2d``); the weight gradient is accumulated in
    float32 by the C++ kernel either way, and every gradient comes back in its input's dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dilation: int, compute: torch.dtype) -> torch.Tensor:
        ctx.dilation, ctx.dtypes = dilation, (x.dtype, weight.dtype)
        xc, wc = x.to(compute), weight.to(compute)
        ctx.save_for_backward(xc, wc)
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(xc, wc, None, 1, dilation, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        d, groups = ctx.dilation, x.shape[1]
        # One memory format throughout: a grad in another layout than x sends oneDNN and the
        # neighbouring BN/ReLU backward kernels down their slow mixed-format paths.
        memory_format = _format(x)
        grad_out = grad_out.to(x.dtype).contiguous(memory_format=memory_format)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            with torch.autocast("cpu", enabled=False):
                grad_x = F.conv2d(grad_out, weight.flip((2, 3)), None, 1, d, d, groups)
            grad_x = grad_x.to(ctx.dtypes[0]).contiguous(memory_format=memory_format)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.lightclf_dw.dw3x3_grad_weight(x.float(), grad_out.float(), d)
            if grad_w.stride() != weight.stride() or grad_w.dtype != ctx.dtypes[1]:
                # The weight's own strides (channels_last (C,1,3,3) differs only in a size-1 dim):
                # DDP's gradient buckets mirror the parameters', and a mismatch costs a copy per step.
                grad_w = torch.empty_like(weight, dtype=ctx.dtypes[1]).copy_(grad_w)
        return grad_x, grad_w, None, None


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class DilatedDepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state_dict and output) whose training backward is fast
    on CPU for the dilated 3x3 depthwise case; see the module docstring."""

    def __init__(self, channels: int, dilation: int, fast_backward: bool = True) -> None:
        super().__init__(channels, channels, 3, 1, dilation, dilation, channels, bias=False)
        self.fast_backward = fast_backward

    def _fast_path_applies(self, x: torch.Tensor) -> bool:
        return (
            self.fast_backward
            and self.dilation[0] > 1
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and self._compute_dtype(x) is not None
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and fast_dilated_available()
        )

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """float32 for a float32 layer and input; bfloat16 under CPU bf16 autocast (what autocast would
        run the conv in); None otherwise (another dtype: PyTorch's own path)."""
        if torch.is_autocast_enabled("cpu"):
            autocast_dtype = torch.get_autocast_dtype("cpu")
            return autocast_dtype if autocast_dtype == torch.bfloat16 and self.weight.dtype == torch.float32 else None
        return torch.float32 if x.dtype == torch.float32 and self.weight.dtype == torch.float32 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_path_applies(x):
            return _DilatedDepthwise3x3.apply(x, self.weight, self.dilation[0], self._compute_dtype(x))
        return super().forward(x)
