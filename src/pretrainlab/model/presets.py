"""Named model sizes. Parameter counts are non-embedding (SwiGLU MLP); explicit config fields override.

`bench-a` / `bench-b` are the shapes of the reference CPU benchmark (/work/shared/bench/ref_gpt_cpu.py),
including its SwiGLU width (8/3 d rounded up to a multiple of 32), so speed comparisons are like for like.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layers=2, d_model=64, n_heads=2),  # ~0.1M
    "mini": dict(n_layers=4, d_model=128, n_heads=4),  # ~0.8M
    "small": dict(n_layers=6, d_model=384, n_heads=6),  # ~10.6M
    "medium": dict(n_layers=8, d_model=512, n_heads=8),  # ~25M
    "gpt2-124m": dict(n_layers=12, d_model=768, n_heads=12),  # 85M + 38.6M embedding at vocab 50257
    "350m": dict(n_layers=24, d_model=1024, n_heads=16),  # GPT-2 medium shape, ~302M + embedding
    "1b": dict(n_layers=22, d_model=2048, n_heads=32, n_kv_heads=4, mlp_hidden=5632),  # TinyLlama shape
    "bench-a": dict(n_layers=6, d_model=384, n_heads=6, mlp_hidden=1024),
    "bench-b": dict(n_layers=4, d_model=128, n_heads=4, mlp_hidden=352),
}

DEFAULT_PRESET = "mini"
"""Used when the config names neither a preset nor all of n_layers, d_model and n_heads."""

# A preset's derived widths only apply while the field they derive from keeps the preset's value.
DERIVED_FROM = {"mlp_hidden": "d_model", "n_kv_heads": "n_heads"}
