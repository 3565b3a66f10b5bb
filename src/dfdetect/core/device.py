"""Where tensors run and in which precision: device choice, native-bf16 detection, autocast, memory format.

bf16 autocast is used only where it is fast: CUDA, and CPUs that compute bf16 natively (AVX-512 BF16 or AMX).
Elsewhere bf16 is emulated and slower than fp32, so it is never assumed from the CPU's name or vendor.
Training may use it (``amp``); scoring stays fp32 on CPU unless a caller asks otherwise.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

import torch

from dfdetect.core.errors import DfdetectError


class DeviceUnavailableError(DfdetectError, RuntimeError):
    """The requested device (or the distributed set-up) is not available on this machine."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; a requested CUDA device that is missing is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


@lru_cache(maxsize=1)
def cpu_features() -> dict[str, bool]:
    """The CPU's vector/matrix features that decide the fast precision (as PyTorch's cpuinfo reads them)."""
    caps: dict[str, Any] = {}
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = dict(get())
        except RuntimeError:
            caps = {}
    names = ("avx2", "avx512_f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {n: bool(caps.get(n, False)) for n in names}


ONEDNN_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX10_1_512",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
    "ALL",
)
"""``ONEDNN_MAX_CPU_ISA`` values that still let oneDNN (PyTorch's and OpenVINO's CPU kernels) use bf16 hardware."""


def onednn_allows_bf16() -> bool:
    """False when oneDNN is capped below its bf16 kernels (e.g. ``ONEDNN_MAX_CPU_ISA=AVX2``, a stand-in for an
    AVX2 CPU): OpenVINO then cannot compile bf16 and PyTorch's bf16 is emulated, whatever the CPU has."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return not cap or cap in ONEDNN_BF16_ISAS


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX-512 BF16 or AMX BF16) and oneDNN may use it: bf16
    autocast and OpenVINO bf16 pay off there."""
    f = cpu_features()
    return (f["avx512_bf16"] or f["amx_bf16"]) and onednn_allows_bf16()


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for this device (None = fp32): bf16 on CUDA and on native-bf16 CPUs when ``amp``."""
    if not amp:
        return None
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp: bool):
    """bf16 autocast where :func:`amp_dtype` says it is native (bf16 needs no loss scaler), else a no-op."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(device: torch.device, amp: bool) -> str:
    """What :func:`autocast` runs in, for logs and benchmark rows."""
    return "bf16 autocast" if amp_dtype(device, amp) is not None else "fp32"


def to_memory_format(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D batch in channels-last layout when asked (oneDNN and cuDNN convolutions prefer it), else as is."""
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
