"""`train.compile: auto`: compile where it pays, never in deterministic mode."""

import torch

from pretrainlab.train.compile_choice import CPU_MIN_SECONDS, choose_compile

CPU = torch.device("cpu")


def test_explicit_settings_win():
    assert choose_compile(True, device=CPU, deterministic=True, total_flops=1.0, peak_flops=1e12)[0] is True
    assert choose_compile(False, device=CPU, deterministic=False, total_flops=1e30, peak_flops=1e12)[0] is False


def test_auto_compiles_long_cpu_runs_only():
    peak = 200e9
    long_run = 2 * CPU_MIN_SECONDS * 0.5 * peak
    short_run = 0.1 * CPU_MIN_SECONDS * 0.5 * peak
    assert choose_compile("auto", device=CPU, deterministic=False, total_flops=long_run, peak_flops=peak)[0]
    on, reason = choose_compile("auto", device=CPU, deterministic=False, total_flops=short_run, peak_flops=peak)
    assert not on and "too short" in reason
    assert not choose_compile("auto", device=CPU, deterministic=True, total_flops=long_run, peak_flops=peak)[0]
    assert choose_compile("auto", device=torch.device("cuda"), deterministic=False, total_flops=1.0, peak_flops=None)[0]
