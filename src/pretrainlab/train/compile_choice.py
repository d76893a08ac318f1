"""Whether to `torch.compile` a run when the config says `train.compile: auto`.

Compiling makes a CPU step 1.0-1.3x faster (benchmarks/bench_step.py: bf16 at 6x384 goes from about 1.4x
to 1.7x nanoGPT's fp32 eager figure) but costs 10-60 s on a 2-core CPU before the first step. So `auto`
compiles on GPUs, and on CPUs only when the run is expected to last long enough to earn that back:
at least `CPU_MIN_SECONDS`, estimated from the run's FLOPs at a conservative utilisation of the
measured matmul peak. Deterministic runs stay eager, so their bitwise guarantees rest on the
simplest code path.
"""

from __future__ import annotations

import torch

CPU_MIN_SECONDS = 600.0
ASSUMED_MFU = 0.5


def choose_compile(
    setting: bool | str,
    *,
    device: torch.device,
    deterministic: bool,
    total_flops: float,
    peak_flops: float | None,
) -> tuple[bool, str]:
    """(compile?, the reason in words) for `train.compile` = True, False or "auto"."""
    if setting is True or setting is False:
        return bool(setting), "set in the config"
    if deterministic:
        return False, "auto: eager in deterministic mode"
    if device.type != "cpu":
        return True, f"auto: on {device.type}"
    if not peak_flops:
        return False, "auto: no matmul peak to estimate the run time"
    seconds = total_flops / (ASSUMED_MFU * peak_flops)
    if seconds >= CPU_MIN_SECONDS:
        return True, f"auto: an estimated {seconds / 60:.0f}-minute run earns back the compile time"
    return False, f"auto: an estimated {seconds / 60:.1f}-minute run is too short to earn back compiling"
