"""Mixed precision: which autocast dtype `train.precision` means on this device.

`auto` picks bf16 autocast where the hardware computes bf16 natively (CUDA GPUs that support it;
CPUs with AVX512-BF16 or AMX, where /work/shared/bench measured bf16 autocast ~1.4-1.6x faster than
fp32 on the reference models), else fp32. Weights, gradients and optimiser state stay fp32; bf16
needs no loss scaling (its exponent range equals fp32's), unlike fp16.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from pretrainlab.errors import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU flags list AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo; False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.precision` (None: plain fp32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_has_native_bf16()
    else:
        supported = False
    if precision == "bf16":
        if device.type not in ("cuda", "cpu"):
            raise ConfigError(f"train.precision=bf16: autocast is not supported on device {device}", hint="use fp32")
        if device.type == "cuda" and not supported:
            raise ConfigError(
                f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 support",
                hint="use train.precision=fp32 (or auto)",
            )
        return torch.bfloat16  # on a CPU without native bf16 it is emulated: slow but correct
    if precision == "auto":
        return torch.bfloat16 if supported else None
    raise ConfigError(f"train.precision: {precision!r} is not one of auto, fp32, bf16")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """torch.autocast for `dtype`, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"
