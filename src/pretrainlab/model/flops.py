"""Parameter counts, training FLOPs per token, hardware peak FLOP/s and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from pretrainlab.config import ModelConfig


def count_parameters(model: nn.Module, cfg: ModelConfig) -> dict[str, int]:
    """{"params": unique parameters (a tied head counted once), "params_non_embedding": without the token
    embedding and output head matrices (Kaplan et al. 2020 convention)}. Works on wrapped models."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    assert cfg.vocab_size and cfg.d_model
    embedding = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return {"params": total, "params_non_embedding": total - embedding}


def matmul_params(model: nn.Module) -> int:
    """Parameters taking part in a matmul per token: the ≥2-D weights of the blocks plus the output head.

    A projection module may define `matmul_params() -> int` (e.g. a sparse or low-rank linear counting
    only the work it does); its own count then replaces its weights'.
    """
    from pretrainlab.model.decoder import Decoder

    assert isinstance(model, Decoder)
    counted: set[int] = set()
    n = 0
    for module in model.blocks.modules():
        custom = getattr(module, "matmul_params", None)
        if callable(custom):
            n += int(custom())
            counted.update(id(p) for p in module.parameters())
            continue
        for p in module.parameters(recurse=False):
            if p.dim() >= 2 and id(p) not in counted:
                counted.add(id(p))
                n += p.numel()
    return n + model.output_weight.numel()


@functools.lru_cache(maxsize=64)
def _matmul_params_of(cfg_json: str) -> int:
    from pretrainlab.model.decoder import build_model

    cfg = ModelConfig.model_validate_json(cfg_json)
    with torch.device("meta"):
        return matmul_params(build_model(cfg))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L d T.

    N counts the parameters that take part in a matmul (every projection plus the output head, not the
    embedding lookup or norm gains): 2 FLOPs per parameter forward, 4 backward. 12 L d T is the attention
    score and weighted-sum matmuls over the full T x T (causal masking not discounted), the convention of
    PaLM (Chowdhery et al. 2022, appendix B) and Chinchilla (Hoffmann et al. 2022, appendix F), as used
    by nanoGPT's MFU. The model is sized on the meta device, so registry entries count themselves.
    """
    assert cfg.n_layers and cfg.d_model, "flops_per_token needs a resolved ModelConfig"
    n = _matmul_params_of(cfg.model_dump_json())
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.d_model * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the hardware peak (0..1)."""
    return tokens_per_s * flops_per_token / peak_flops


# Dense peak FLOP/s of known GPUs (vendor datasheets, SXM parts unless named): bf16, tf32 and fp32.
_GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.5e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 PCIe": {"bf16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "H100": {"bf16": 989.5e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def _gpu_table_peak(name: str, dtype: torch.dtype) -> float | None:
    for key, peaks in _GPU_PEAKS.items():  # "H100 PCIe" is listed before the "H100" it contains
        if key in name:
            if dtype in (torch.bfloat16, torch.float16):
                return peaks["bf16"]
            tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
            return peaks["tf32" if tf32 else "fp32"]
    return None


@functools.lru_cache(maxsize=16)
def _probe(device_type: str, index: int | None, dtype: torch.dtype, threads: int, seconds: float) -> float:
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    n = 1024 if device_type == "cpu" else 8192
    # A generator of its own: the probe runs once per process, inside the first Trainer, and must not move the
    # global RNG (else the first run of a process would differ from a later run of the same config).
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # kernel selection, page faults
        torch.mm(a, b, out=c)
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        sync()
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device | str, dtype: torch.dtype, *, probe_seconds: float = 0.3) -> float:
    """Peak dense matmul FLOP/s of `device` in `dtype` (the compute dtype: bf16 under autocast).

    CUDA: a datasheet table of known GPUs (H100/H200/A100), else a probe. CPU: measured once per process
    (and thread count) by timing square 1024 matmuls for ~`probe_seconds` and keeping the best, like
    /work/shared/bench/matmul_peak.py; the best rather than the median because MFU is a ceiling ratio.
    """
    device = torch.device(device)
    if device.type == "cuda":
        peak = _gpu_table_peak(torch.cuda.get_device_name(device), dtype)
        if peak is not None:
            return peak
    return _probe(device.type, device.index, dtype, torch.get_num_threads(), probe_seconds)
