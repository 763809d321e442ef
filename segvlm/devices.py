"""Device and dtype choice: CUDA when present, bfloat16 where the hardware runs it natively."""

from __future__ import annotations

import functools
from pathlib import Path

from segvlm.errors import ConfigError

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` when available, else ``cpu``; other values pass through (checked)."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu'")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX-512 BF16 or AMX (bf16 matmul runs several times faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> bfloat16 on CUDA and on CPUs with native bf16, else float32; names -> torch dtypes."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of auto, float32, bfloat16, float16")
    return getattr(torch, _DTYPES[dtype])
