"""Whether to `torch.compile` a run when the config says `train.compile: auto`.

Compiling makes a bf16 CPU step 1.13x (6 x 384, vocabulary 65) to 1.28x (4 x 128, vocabulary 8192)
faster (benchmarks/bench_step.py) but a cold compile costs about 30 s on a 2-core CPU (33 s for the
6 x 384 model), which breaks even after 2.5-5 minutes of training. So `auto` compiles on GPUs, and on
CPUs only when the run is expected to last at least `CPU_MIN_SECONDS`, estimated from the run's FLOPs
at a utilisation of the measured matmul peak (`ASSUMED_MFU`) above what small models reach, so the
estimate errs short. Deterministic runs stay eager, so their bitwise guarantees rest on the
simplest code path.
"""

from __future__ import annotations

import torch

CPU_MIN_SECONDS = 300.0
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
