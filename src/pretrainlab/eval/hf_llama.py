"""The mapping between pretrainlab's `Decoder` and Hugging Face's `LlamaForCausalLM`, both directions.

With `norm=rmsnorm`, `mlp=swiglu`, `attention=sdpa`, `linear=dense` and no QK-norm the decoder *is* the
Llama architecture; only the tensor layout differs:

- pretrainlab fuses q, k and v into one projection (`attn.qkv`, rows q | k | v) and gate and up into one
  (`mlp.gate_up`, rows gate | up); Llama keeps `q_proj`, `k_proj`, `v_proj`, `gate_proj`, `up_proj`.
- pretrainlab's RoPE rotates interleaved pairs (2j, 2j+1) of each head (Meta's original Llama layout);
  Hugging Face's `rotate_half` rotates (j, j + head_dim/2). Both use the frequency theta^(-2j/head_dim) for
  pair j, so moving row 2j of every q/k head to row j and row 2j+1 to row j + head_dim/2 gives the same
  attention scores. This is the inverse of the permutation in transformers' `convert_llama_weights_to_hf.py`.

Nothing here needs transformers: the export writes plain JSON and safetensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from pretrainlab.config import ModelConfig
from pretrainlab.errors import CheckpointError, ConfigError

LLAMA_DEFAULTS: dict[str, Any] = {
    # LlamaConfig's defaults, for keys a config.json may leave out.
    "num_key_value_heads": None,  # = num_attention_heads
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "attention_dropout": 0.0,
    "vocab_size": 32000,
}


# Every ModelConfig field, decided (a test fails when a new field is not listed here):
MAPPED_FIELDS = {  # pretrainlab field -> LlamaConfig key
    "n_layers": "num_hidden_layers", "d_model": "hidden_size", "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads", "mlp_hidden": "intermediate_size", "vocab_size": "vocab_size",
    "max_seq_len": "max_position_embeddings", "tie_embeddings": "tie_word_embeddings", "rope_theta": "rope_theta",
    "norm_eps": "rms_norm_eps", "bias": "attention_bias + mlp_bias", "init_std": "initializer_range",
}
LLAMA_ONLY_FIELDS = {  # must have this value, else the export is refused
    "norm": "rmsnorm", "mlp": "swiglu", "attention": "sdpa", "linear": "dense", "linear_options": {}, "qk_norm": False,
}
NOT_CARRIED_FIELDS = ("preset", "dropout")  # preset only names sizes; dropout is training-only


# --------------------------------------------------------------------------------------------
# RoPE layouts
# --------------------------------------------------------------------------------------------


def interleaved_to_half(w: Tensor, n_heads: int) -> Tensor:
    """Rows of a q or k projection (weight or bias), per head, from interleaved pairs to rotate_half order."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def half_to_interleaved(w: Tensor, n_heads: int) -> Tensor:
    """The inverse of `interleaved_to_half`."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------------------------
# what maps onto Llama
# --------------------------------------------------------------------------------------------


def unsupported_parts(cfg: ModelConfig) -> list[str]:
    """Every setting of `cfg` with no LlamaForCausalLM equivalent, one line each naming the config field.

    Field by field: sizes, vocab_size, max_seq_len, tie_embeddings, rope_theta, norm_eps, bias and init_std
    map onto Llama keys; preset only names sizes; dropout is a training setting (inference has none), so
    it is not carried. The component registries (norm, mlp, attention, linear) and qk_norm must be Llama's.
    """
    bad = []
    if cfg.norm != "rmsnorm":
        bad.append(f"model.norm={cfg.norm!r}: Llama normalises with RMSNorm (model.norm=rmsnorm)")
    if cfg.mlp != "swiglu":
        bad.append(f"model.mlp={cfg.mlp!r}: Llama's MLP is SwiGLU (model.mlp=swiglu)")
    if cfg.attention != "sdpa":
        bad.append(f"model.attention={cfg.attention!r}: Llama's attention is the standard causal one "
                   "(model.attention=sdpa)")
    if cfg.linear != "dense":
        bad.append(f"model.linear={cfg.linear!r}: Llama's projections are dense matrices (model.linear=dense)")
    elif cfg.linear_options:
        bad.append(f"model.linear_options={cfg.linear_options!r}: dense projections take no options")
    if cfg.qk_norm:
        bad.append("model.qk_norm=true: Llama has no QK-norm (it is Qwen 3 / OLMo 2 style)")
    return bad


def require_llama(cfg: ModelConfig, what: str) -> None:
    """Raise one ConfigError listing every part of `cfg` that LlamaForCausalLM cannot represent."""
    bad = unsupported_parts(cfg)
    if bad:
        raise ConfigError(
            f"{what} cannot be exported as LlamaForCausalLM; parts with no Hugging Face Llama equivalent: "
            + "; ".join(bad),
            hint="export runs trained with the Llama components (the defaults); other recipes have no "
            "transformers class to load them without custom code",
        )


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


def llama_config(cfg: ModelConfig, *, dtype: str, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """config.json of LlamaForCausalLM for a resolved `cfg`.

    rope_theta is written both the transformers 4 way (top level) and the 5 way (`rope_parameters`), and
    the dtype both as `torch_dtype` (what transformers before 4.56 and vLLM versions of that time read) and
    `dtype` (4.56 and later). Both are needed; neither key makes transformers 4.57 or 5.x warn on loading
    (checked with 4.57.1 and 5.24: only the `torch_dtype=` argument of `from_pretrained` is deprecated).
    """
    assert cfg.d_model and cfg.n_heads and cfg.n_kv_heads and cfg.n_layers and cfg.mlp_hidden
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def model_config_from_llama(hf: dict[str, Any], source: str) -> ModelConfig:
    """A resolved pretrainlab ModelConfig from a Llama config.json; `source` names the file in errors.

    Settings pretrainlab's decoder cannot reproduce are refused, each naming its key: other model types,
    rope_scaling (YaRN, Llama 3.1 scaling, ...), sliding windows, activations other than SiLU, a head_dim
    other than hidden_size / num_attention_heads, bias in attention but not the MLP (or the reverse),
    attention dropout, quantised weights.
    """
    def refuse(key: str, why: str, hint: str) -> ConfigError:
        return ConfigError(f"{source}: {key}={hf.get(key)!r}: {why}", hint=hint)

    def get(key: str) -> Any:
        return hf.get(key, LLAMA_DEFAULTS.get(key))

    if hf.get("model_type") != "llama":
        raise refuse("model_type", "only Llama-architecture checkpoints (model_type llama) can be imported",
                     "use a LlamaForCausalLM folder; other architectures differ in ways pretrainlab does not model")
    arch = hf.get("architectures")
    if arch and "LlamaForCausalLM" not in arch:
        raise refuse("architectures", "not a causal language model (LlamaForCausalLM)",
                     "import the LlamaForCausalLM checkpoint, not a model with another head")
    if get("hidden_act") not in ("silu", "swish"):
        raise refuse("hidden_act", "pretrainlab's SwiGLU uses SiLU", "only SiLU-activated Llama models map")
    rope_type = (hf.get("rope_parameters") or {}).get("rope_type", "default")
    scaling = hf.get("rope_scaling")
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        raise refuse("rope_scaling", "RoPE scaling (linear, dynamic, YaRN, llama3, ...) is not implemented",
                     "import a checkpoint trained with plain RoPE (rope_scaling null)")
    if rope_type != "default":
        raise ConfigError(f"{source}: rope_parameters.rope_type={rope_type!r}: RoPE scaling is not implemented",
                          hint="import a checkpoint trained with plain RoPE (rope_type default)")
    for key in ("sliding_window", "use_sliding_window", "quantization_config"):
        if hf.get(key):
            raise refuse(key, "not supported (pretrainlab attends to the whole window, with full-precision "
                         "weights)", f"import a checkpoint without {key}")
    missing = [k for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size") if k not in hf]
    if missing:
        raise ConfigError(f"{source}: the key(s) {', '.join(missing)} are missing", hint="not a complete Llama config.json")
    if float(get("attention_dropout") or 0.0) != 0.0:
        raise refuse("attention_dropout", "attention-probability dropout has no pretrainlab equivalent",
                     "set attention_dropout to 0.0 in config.json (it only affects training)")
    d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    if d % heads:
        raise refuse("hidden_size", f"not divisible by num_attention_heads={heads}", "not a valid Llama config")
    kv = int(get("num_key_value_heads") or heads)
    if kv <= 0 or heads % kv:
        raise ConfigError(
            f"{source}: num_key_value_heads={kv} does not divide num_attention_heads={heads}",
            hint="not a valid Llama config: each key/value head serves a whole number of query heads",
        )
    if hf.get("head_dim") is not None and int(hf["head_dim"]) != d // heads:
        raise refuse("head_dim", f"pretrainlab's head_dim is hidden_size / num_attention_heads = {d // heads}",
                     "only checkpoints whose heads split hidden_size evenly can be imported")
    if bool(get("attention_bias")) != bool(get("mlp_bias")):
        raise ConfigError(
            f"{source}: attention_bias={get('attention_bias')!r} but mlp_bias={get('mlp_bias')!r}: pretrainlab's "
            "model.bias applies to every projection",
            hint="only checkpoints with bias in both or in neither can be imported",
        )
    theta = (hf.get("rope_parameters") or {}).get("rope_theta", get("rope_theta"))
    try:
        return ModelConfig(
            n_layers=int(hf["num_hidden_layers"]),
            d_model=d,
            n_heads=heads,
            n_kv_heads=kv,
            mlp_hidden=int(hf["intermediate_size"]),
            vocab_size=int(get("vocab_size")),
            max_seq_len=int(get("max_position_embeddings")),
            tie_embeddings=bool(get("tie_word_embeddings")),
            rope_theta=float(theta),
            norm_eps=float(get("rms_norm_eps")),
            bias=bool(get("attention_bias")),
            init_std=float(get("initializer_range")),
        )
    except (ValueError, TypeError) as e:  # pydantic: a value out of range
        raise ConfigError(f"{source}: a value does not fit pretrainlab's model config ({e})") from None


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------


def to_hf_state(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """pretrainlab state dict -> LlamaForCausalLM tensors (HF names); lm_head only when the head is untied."""
    assert cfg.n_layers and cfg.n_heads and cfg.n_kv_heads and cfg.d_model and cfg.mlp_hidden
    H, KV, D, F = cfg.n_heads, cfg.n_kv_heads, cfg.d_model // cfg.n_heads, cfg.mlp_hidden
    expected = set(_pretrainlab_names(cfg))
    extra = sorted(set(state) - expected)
    if extra:
        raise ConfigError(
            f"the checkpoint holds tensors with no Llama equivalent: {', '.join(extra[:5])}"
            + (f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""),
            hint="only the plain decoder (embedding, blocks, final norm, head) can be exported",
        )
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"]
    suffixes = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = state[src + "attn_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = state[src + "mlp_norm.weight"]
        for s in suffixes:
            q, k, v = state[src + f"attn.qkv.{s}"].split((H * D, KV * D, KV * D))
            out[dst + f"self_attn.q_proj.{s}"] = interleaved_to_half(q, H)
            out[dst + f"self_attn.k_proj.{s}"] = interleaved_to_half(k, KV)
            out[dst + f"self_attn.v_proj.{s}"] = v
            out[dst + f"self_attn.o_proj.{s}"] = state[src + f"attn.out.{s}"]
            gate, up = state[src + f"mlp.gate_up.{s}"].split((F, F))
            out[dst + f"mlp.gate_proj.{s}"] = gate
            out[dst + f"mlp.up_proj.{s}"] = up
            out[dst + f"mlp.down_proj.{s}"] = state[src + f"mlp.down.{s}"]
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(get: Callable[[str], Tensor], cfg: ModelConfig, source: str) -> dict[str, Tensor]:
    """LlamaForCausalLM tensors (read through `get(hf_name)`) -> pretrainlab state dict in float32."""
    return dict(iter_hf_state(get, cfg, source))


def iter_hf_state(get: Callable[[str], Tensor], cfg: ModelConfig, source: str) -> Iterator[tuple[str, Tensor]]:
    """(pretrainlab name, float32 tensor) pairs of a LlamaForCausalLM state read through `get(hf_name)`,
    one at a time (a caller copying each into a model never holds a second full state).

    Every tensor's shape is checked against `cfg` (read from the same folder's config.json); a mismatch
    names the tensor and the config keys it depends on.
    """
    assert cfg.n_layers and cfg.n_heads and cfg.n_kv_heads and cfg.d_model and cfg.mlp_hidden and cfg.vocab_size
    H, KV, D, F, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_model // cfg.n_heads, cfg.mlp_hidden, cfg.d_model

    def read(name: str, shape: tuple[int, ...], keys: str) -> Tensor:
        t = get(name)
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(t.shape)}, but config.json ({keys}) implies {shape}",
                hint="the weights do not belong to this config.json",
            )
        return t.float()

    V = cfg.vocab_size
    yield "embed.weight", read("model.embed_tokens.weight", (V, d), "vocab_size, hidden_size")
    yield "norm.weight", read("model.norm.weight", (d,), "hidden_size")
    if not cfg.tie_embeddings:
        yield "head.weight", read("lm_head.weight", (V, d), "vocab_size, hidden_size")
    attn, mlp = "hidden_size, num_attention_heads, num_key_value_heads", "hidden_size, intermediate_size"
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        yield dst + "attn_norm.weight", read(src + "input_layernorm.weight", (d,), "hidden_size")
        yield dst + "mlp_norm.weight", read(src + "post_attention_layernorm.weight", (d,), "hidden_size")
        for s in ("weight", "bias") if cfg.bias else ("weight",):
            tail: tuple[int, ...] = (d,) if s == "weight" else ()
            q = half_to_interleaved(read(src + f"self_attn.q_proj.{s}", (H * D, *tail), attn), H)
            k = half_to_interleaved(read(src + f"self_attn.k_proj.{s}", (KV * D, *tail), attn), KV)
            v = read(src + f"self_attn.v_proj.{s}", (KV * D, *tail), attn)
            yield dst + f"attn.qkv.{s}", torch.cat((q, k, v))
            del q, k, v
            yield dst + f"attn.out.{s}", read(src + f"self_attn.o_proj.{s}", (d, H * D)[: len(tail) + 1], attn)
            gate = read(src + f"mlp.gate_proj.{s}", (F, *tail), mlp)
            up = read(src + f"mlp.up_proj.{s}", (F, *tail), mlp)
            yield dst + f"mlp.gate_up.{s}", torch.cat((gate, up))
            del gate, up
            yield dst + f"mlp.down.{s}", read(src + f"mlp.down_proj.{s}", (d, F)[: len(tail) + 1], mlp)


def _pretrainlab_names(cfg: ModelConfig) -> list[str]:
    assert cfg.n_layers
    names = ["embed.weight", "norm.weight"] + ([] if cfg.tie_embeddings else ["head.weight"])
    for i in range(cfg.n_layers):
        names += [f"blocks.{i}.attn_norm.weight", f"blocks.{i}.mlp_norm.weight"]
        for s in ("weight", "bias") if cfg.bias else ("weight",):
            names += [f"blocks.{i}.{p}.{s}" for p in ("attn.qkv", "attn.out", "mlp.gate_up", "mlp.down")]
    return names
