"""Fill a `ModelConfig` from its preset and the data, and reject impossible shapes before building anything."""

from __future__ import annotations

import difflib
import math
from typing import Any

from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model.presets import DEFAULT_PRESET, DERIVED_FROM, PRESETS
from pretrainlab.model.registries import ATTENTIONS, LINEARS, MLPS, NORMS

SIZE_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "mlp_hidden")


def default_mlp_hidden(d_model: int, mlp: str) -> int:
    """SwiGLU: 8/3 d rounded up to a multiple of 64 (same parameters as a 4d GELU MLP); GELU: 4 d."""
    if mlp == "gelu":
        return 4 * d_model
    return 64 * math.ceil(8 * d_model / 3 / 64)


def resolve_model_config(cfg: ModelConfig, *, vocab_size: int, seq_len: int) -> ModelConfig:
    """Every size filled (preset, then explicit fields, then defaults) and checked against the data.

    `vocab_size` is the tokenizer's vocabulary, `seq_len` the training window. Idempotent.
    Raises ConfigError naming the offending field.
    """
    explicit = {f: getattr(cfg, f) for f in SIZE_FIELDS if getattr(cfg, f) is not None}
    preset_name = cfg.preset
    if preset_name is None and not all(f in explicit for f in ("n_layers", "d_model", "n_heads")):
        preset_name = DEFAULT_PRESET
    sizes: dict[str, Any] = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            close = difflib.get_close_matches(preset_name, list(PRESETS), n=1, cutoff=0.5)
            raise ConfigError(
                f"model.preset={preset_name!r} is not a known preset"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" (valid: {', '.join(PRESETS)})",
                hint="choose a preset or set model.n_layers, model.d_model and model.n_heads",
            )
        preset = PRESETS[preset_name]
        for f, v in preset.items():
            base = DERIVED_FROM.get(f)
            if base is None or base not in explicit or explicit[base] == preset.get(base):
                sizes[f] = v
    sizes.update(explicit)

    d, H = sizes["d_model"], sizes["n_heads"]
    KV = sizes.get("n_kv_heads") or H
    if d % H:
        raise ConfigError(
            f"model.d_model={d} is not divisible by model.n_heads={H}",
            hint="choose model.n_heads dividing model.d_model (head_dim = d_model / n_heads)",
        )
    if H % KV:
        raise ConfigError(
            f"model.n_heads={H} is not divisible by model.n_kv_heads={KV}",
            hint="each key/value head serves a whole group of query heads: choose a divisor of n_heads",
        )
    if (d // H) % 2:
        raise ConfigError(
            f"head_dim = model.d_model / model.n_heads = {d}/{H} = {d // H} is odd; rotary embeddings need it even",
            hint="change model.d_model or model.n_heads",
        )
    for registry, field in ((NORMS, "norm"), (MLPS, "mlp"), (ATTENTIONS, "attention"), (LINEARS, "linear")):
        registry.get(getattr(cfg, field), field=f"model.{field}")

    vocab = cfg.vocab_size if cfg.vocab_size is not None else vocab_size
    if vocab < vocab_size:
        raise ConfigError(
            f"model.vocab_size={vocab} is smaller than the data's vocabulary ({vocab_size} tokens)",
            hint=f"remove model.vocab_size (it defaults to the tokenizer's) or set it >= {vocab_size}",
        )
    max_len = cfg.max_seq_len if cfg.max_seq_len is not None else seq_len
    if max_len < seq_len:
        raise ConfigError(
            f"model.max_seq_len={max_len} is shorter than data.seq_len={seq_len}",
            hint=f"remove model.max_seq_len or set it >= {seq_len}",
        )
    return cfg.model_copy(
        update=dict(
            preset=preset_name,
            n_layers=sizes["n_layers"],
            d_model=d,
            n_heads=H,
            n_kv_heads=KV,
            mlp_hidden=sizes.get("mlp_hidden") or default_mlp_hidden(d, cfg.mlp),
            vocab_size=vocab,
            max_seq_len=max_len,
        )
    )
