"""Model surgery: change how a model's attention and MLP projections are parameterised, before the model is
built (a config) or after it is trained (its weights).

- `convert_model_config(cfg, linear=..., options=...)`: the config with another `model.linear` (checked by
  building one projection on the meta device), e.g. a dense recipe turned into a low-rank one. The same as
  `pretrainlab train dense.yaml model.linear=low_rank model.linear_options.rank=32`, as an API for scripts.
- `dense_to_low_rank(source, target)`: PELA's first step (Guo et al., CVPR 2024, *PELA: Learning
  Parameter-Efficient Models with Low-Rank Approximation*): each projection W of a trained model becomes the
  rank-r truncation of its SVD, W = U S V^T ~ U_r S_r V_r^T, split evenly between the factors,
  B = U_r S_r^(1/2) / sqrt(alpha/r) and A = S_r^(1/2) V_r^T / sqrt(alpha/r), so that the layer's
  (alpha/r) B A is exactly the truncation. By Eckart-Young it is the best rank-r approximation in Frobenius
  norm, with squared error sum_{i>r} s_i^2; at full rank the model computes what the dense one did.
  Everything else (embedding, head, norms, biases) is copied.
- `load_converted(tensors, target, ...)`: the general form `init_from` uses, one projection at a time:
  each source projection's effective weight (dense `weight`; masked: `weight`, whose masked entries are 0;
  low_rank: (alpha/r) B A; sparse_low_rank: (alpha/r) B A + S) is set into the target's parameterisation
  (dense: copied; low_rank: truncated SVD; sparse_low_rank: truncated SVD, then the residual's entries on
  the target's own support). Converting into `masked` is refused (its mask is random and would cut the
  source's weights at random; prune with the `gradual_pruning` callback instead).

PELA picks the rank per layer from a compression factor c, r = floor(in * out / (c (in + out)))
(`pela_rank`); pretrainlab's `low_rank` takes one `rank` (or `rank_fraction` of min(in, out)) for every
projection, fused ones (qkv, gate_up) being one matrix each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from pretrainlab.config import ModelConfig, RunConfig
from pretrainlab.errors import CheckpointError, ConfigError

C = TypeVar("C", ModelConfig, RunConfig)


# ---------------------------------------------------------------------- configs


def convert_model_config(cfg: C, linear: str, options: Mapping[str, Any] | None = None) -> C:
    """`cfg` (a RunConfig or its ModelConfig) with `model.linear=linear` and `model.linear_options=options`.

    The name and options are checked as the model build would check them: a ConfigError names `model.linear`
    or `model.linear_options.<key>`. When the config fixes the width (`d_model`, or a `preset`'s, resolved
    through model/resolve.py) one d_model x d_model projection is built on the meta device, the smallest
    matrix of a block (every projection has min(in, out) = d_model), so e.g. a rank above d_model is refused.
    When it does not (the sizes come later, e.g. from `init_from`), only the shape-free checks run (names,
    types and ranges of the options: the linear's `callbacks` check and a build at a width no rank fails).
    """
    model = cfg.model if isinstance(cfg, RunConfig) else cfg
    opts = dict(options or {})
    width = known_width(model)
    if width is None:
        check_linear_options(linear, opts, bias=model.bias)
    else:
        check_linear(linear, opts, width, width, bias=model.bias)
    new_model = model.model_copy(update={"linear": linear, "linear_options": opts})
    if isinstance(cfg, RunConfig):
        return cfg.model_copy(update={"model": new_model})
    return new_model  # type: ignore[return-value]


def known_width(model: ModelConfig) -> int | None:
    """The d_model a config builds with when it fixes one (explicitly or through its `preset`), else None."""
    if model.d_model is None and model.preset is None:
        return None
    from pretrainlab.model.resolve import resolve_model_config

    vocab = model.vocab_size or 1  # sizes do not depend on the data; any vocabulary and length pass
    return int(resolve_model_config(model, vocab_size=vocab, seq_len=model.max_seq_len or 1).d_model)


_UNKNOWN_WIDTH = 1 << 14  # a width no rank option fails against (meta device: nothing is allocated)


def check_linear_options(linear: str, options: dict[str, Any], *, bias: bool) -> None:
    """The checks of `linear` and its options that need no matrix shape: the linear's own shape-free check
    (its `callbacks` function, which the trainer also runs before building) when it has one, then a build
    on the meta device at a width no rank option fails against (e.g. neither `rank` nor `rank_fraction`)."""
    from pretrainlab.model import decoder as _decoder  # noqa: F401  (registers the built-in linears)
    from pretrainlab.model.registries import LINEARS

    shape_free = getattr(LINEARS.get(linear, field="model.linear"), "callbacks", None)
    if callable(shape_free):
        shape_free(dict(options))
    check_linear(linear, options, _UNKNOWN_WIDTH, _UNKNOWN_WIDTH, bias=bias)


def check_linear(linear: str, options: dict[str, Any], in_features: int, out_features: int, *, bias: bool) -> None:
    """Build one `linear` projection on the meta device (nothing allocated, no random draws): ConfigError when
    the name or options are wrong."""
    build_meta_linear(linear, options, in_features, out_features, bias=bias)


def build_meta_linear(linear: str, options: dict[str, Any], in_features: int, out_features: int, *,
                      bias: bool) -> nn.Module:
    """A `linear` projection on the meta device, built without touching the global random state."""
    from pretrainlab.model import decoder as _decoder  # noqa: F401  (registers the built-in linears)
    from pretrainlab.model.registries import LINEARS

    factory = LINEARS.get(linear, field="model.linear")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        try:
            return factory(in_features, out_features, bias, dict(options))
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.linear_options={options!r} for model.linear={linear!r}: {e}") from None


def pela_rank(in_features: int, out_features: int, compression: float) -> int:
    """PELA's rank for a layer shrunk `compression` times: floor(in * out / (c (in + out))), at least 1."""
    if not compression > 0:
        raise ValueError(f"compression must be > 0 (got {compression})")
    return max(1, math.floor(in_features * out_features / (compression * (in_features + out_features))))


# ---------------------------------------------------------------------- one matrix


@dataclass
class Factors:
    """A truncated SVD split into low-rank factors: scale * B @ A is the rank-r truncation of the matrix."""

    B: Tensor  # (out, r)
    A: Tensor  # (r, in)
    singular_values: Tensor  # all of them, descending (float64)
    tail: float  # sum of the discarded squared singular values: the squared Frobenius error (Eckart-Young)


def svd_factors(weight: Tensor, rank: int, scale: float = 1.0) -> Factors:
    """B = U_r S_r^(1/2) / sqrt(scale), A = S_r^(1/2) V_r^T / sqrt(scale) of `weight` (out, in), so that
    scale * B A = U_r S_r V_r^T. Computed in float64, returned in `weight`'s dtype."""
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank {rank} is outside 1..{min(weight.shape)} for a {tuple(weight.shape)} matrix")
    w = weight.detach().to(torch.float64)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    root = S[:rank].sqrt() / math.sqrt(scale)
    B = (U[:, :rank] * root).to(weight.dtype)
    A = (root[:, None] * Vh[:rank]).to(weight.dtype)
    return Factors(B=B, A=A, singular_values=S, tail=float(S[rank:].pow(2).sum()))


def effective_weight(module: nn.Module) -> Tensor:
    """The dense (out, in) matrix a projection computes with: `effective_weight()`, or an nn.Linear's weight."""
    fn = getattr(module, "effective_weight", None)
    if callable(fn):
        return fn()
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and weight.dim() == 2:
        return weight
    raise TypeError(f"{type(module).__name__} is no projection (no effective_weight() or 2-D weight)")


@torch.no_grad()
def set_from_dense(module: nn.Module, weight: Tensor) -> float:
    """Make `module` compute with (the best approximation it can hold of) `weight` (out, in); returns the
    squared Frobenius error of the approximation's construction (0 for dense, the SVD tail for low rank).
    The bias is left alone."""
    from pretrainlab.model.low_rank import LowRankLinear
    from pretrainlab.model.masked_linear import MaskedLinear
    from pretrainlab.model.sparse_low_rank import SparseLowRankLinear

    if isinstance(module, (LowRankLinear, SparseLowRankLinear)):
        f = svd_factors(weight, module.rank, module.scale)
        module.B.copy_(f.B)
        module.A.copy_(f.A)
        if isinstance(module, SparseLowRankLinear):
            residual = weight.to(torch.float64) - module.scale * (f.B.double() @ f.A.double())
            on_support = residual.reshape(-1)[module.support.to(residual.device)]
            module.values.copy_(on_support.to(module.values.dtype))
            return float((residual.pow(2).sum() - on_support.pow(2).sum()).clamp_min(0))
        return f.tail
    if isinstance(module, MaskedLinear):
        raise ConfigError(
            "model.linear='masked': init_from does not convert other weights into a masked model (its random "
            "mask would cut the source's weights at random)",
            hint="start the masked run from scratch, or prune a dense run with the gradual_pruning callback",
        )
    if isinstance(module, nn.Linear):
        module.weight.copy_(weight.to(module.weight.dtype))
        return 0.0
    raise ConfigError(f"model.linear: init_from cannot convert weights into a {type(module).__name__}",
                      hint="start from a source with the same model.linear and model.linear_options")


def projections(model: nn.Module) -> dict[str, nn.Module]:
    """Every attention and MLP projection of a decoder, by state-dict prefix (e.g. `blocks.0.attn.qkv`):
    the modules inside `model.blocks` that are nn.Linear or have `effective_weight()`."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        raise ValueError("model surgery needs a decoder with `blocks`")
    out: dict[str, nn.Module] = {}
    for name, m in blocks.named_modules():
        if name and (isinstance(m, nn.Linear) or callable(getattr(m, "effective_weight", None))):
            out[f"blocks.{name}"] = m
    return out


# ---------------------------------------------------------------------- whole models


@dataclass
class LayerConversion:
    """How one projection was converted: kinds, rank and squared Frobenius errors."""

    source: str  # the source's parameterisation (its class name)
    target: str
    rank: int | None  # the target's rank (low-rank targets), else None
    tail: float  # squared Frobenius error of the conversion (Eckart-Young tail for an SVD)
    norm: float  # squared Frobenius norm of the source's effective weight


@dataclass
class ConversionReport:
    """What `load_converted` did: tensors copied as they are, projections converted (by prefix)."""

    copied: list[str] = field(default_factory=list)
    converted: dict[str, LayerConversion] = field(default_factory=dict)

    def relative_error(self) -> float:
        """sqrt(sum of squared errors / sum of squared norms) over the converted projections."""
        norm = sum(c.norm for c in self.converted.values())
        return math.sqrt(sum(c.tail for c in self.converted.values()) / norm) if norm > 0 else 0.0

    def describe(self) -> str:
        if not self.converted:
            return f"{len(self.copied)} tensors copied"
        kinds = sorted({f"{c.source} -> {c.target}" for c in self.converted.values()})
        ranks = sorted({c.rank for c in self.converted.values() if c.rank is not None})
        rank = f", rank {ranks[0]}" if len(ranks) == 1 else (f", ranks {ranks[0]}..{ranks[-1]}" if ranks else "")
        return (f"{len(self.converted)} projections converted ({', '.join(kinds)}{rank}; relative Frobenius "
                f"error {self.relative_error():.3g}), {len(self.copied)} other tensors copied")


@torch.no_grad()
def load_converted(
    tensors: Iterable[tuple[str, Tensor]],
    target: nn.Module,
    *,
    source_linear: str = "dense",
    source_options: Mapping[str, Any] | None = None,
    bias: bool = False,
    describe: str = "the source",
) -> ConversionReport:
    """Load a source's tensors (name, tensor) into `target`, converting each projection from the source's
    parameterisation (`source_linear`, `source_options`, `bias`: the source's model config) into the
    target's. Tensors outside the projections must match by name and shape; a projection's tensors are held
    only until its last one arrives. CheckpointError names a missing, extra or misshapen tensor.
    """
    from pretrainlab.model.tensor_copy import TensorCopier

    copier = TensorCopier(target.state_dict(), describe)
    targets = projections(target)
    source_keys: dict[str, tuple[str, ...]] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    report = ConversionReport()
    opts = dict(source_options or {})

    def source_module(prefix: str) -> nn.Module:
        w = effective_weight(targets[prefix])
        return build_meta_linear(source_linear, opts, int(w.shape[1]), int(w.shape[0]), bias=bias)

    for name, t in tensors:
        prefix, _, leaf = name.rpartition(".")
        if prefix in targets:
            if prefix not in source_keys:
                source_keys[prefix] = tuple(source_module(prefix).state_dict())
            if leaf not in source_keys[prefix]:
                copier.extra.append(name)
                continue
            pending.setdefault(prefix, {})[leaf] = t
            if len(pending[prefix]) == len(source_keys[prefix]):
                _convert_one(prefix, pending.pop(prefix), source_module(prefix), targets[prefix], report, describe)
                copier.mark_loaded(k for k in copier.expected if k.startswith(prefix + "."))
            continue
        if copier.copy(name, t):
            report.copied.append(name)
    copier.raise_extra()
    for prefix, got in pending.items():
        lacking = [k for k in source_keys[prefix] if k not in got]
        raise CheckpointError(f"{describe} has no tensor {prefix}.{lacking[0]!r}",
                              hint="the source does not hold a complete pretrainlab decoder")
    copier.raise_missing()
    return report


def _convert_one(prefix: str, tensors: dict[str, Tensor], source: nn.Module, target: nn.Module,
                 report: ConversionReport, describe: str) -> None:
    for key, t in tensors.items():
        want = getattr(source, key) if hasattr(source, key) else None
        if isinstance(want, Tensor) and tuple(want.shape) != tuple(t.shape):
            raise CheckpointError(
                f"{describe}: tensor {prefix + '.' + key!r} has shape {tuple(t.shape)}, but the source's own "
                f"config makes it {tuple(want.shape)}",
                hint="the source's config.yaml does not describe its checkpoint",
            )
    source.load_state_dict(tensors, assign=True)  # the meta module now holds the source's tensors
    weight = effective_weight(source).detach()
    tail = set_from_dense(target, weight)
    src_bias, dst_bias = tensors.get("bias"), getattr(target, "bias", None)
    if (src_bias is None) != (dst_bias is None):
        raise CheckpointError(f"{describe}: {prefix} has {'a' if src_bias is not None else 'no'} bias, the run's "
                              "model " + ("none" if dst_bias is None else "one"), hint="leave model.bias unset")
    if src_bias is not None and isinstance(dst_bias, Tensor):
        dst_bias.copy_(src_bias)
    report.converted[prefix] = LayerConversion(
        source=type(source).__name__, target=type(target).__name__, rank=getattr(target, "rank", None),
        tail=tail, norm=float(weight.double().pow(2).sum()),
    )


def dense_to_low_rank(source: nn.Module | Mapping[str, Tensor], target: nn.Module) -> ConversionReport:
    """PELA step 1: `target` (a decoder built with `model.linear=low_rank`, or `sparse_low_rank`) takes the
    truncated SVD of every projection of `source` (a dense decoder, or its state dict) and a copy of every
    other tensor. Returns the per-layer report (`converted[prefix].tail`: sum of the discarded squared
    singular values). A source decoder of another parameterisation is converted from its effective weights.
    """
    from pretrainlab.model.low_rank import LowRankLinear
    from pretrainlab.model.sparse_low_rank import SparseLowRankLinear

    if not any(isinstance(m, (LowRankLinear, SparseLowRankLinear)) for m in projections(target).values()):
        raise ConfigError("dense_to_low_rank: the target model has no low-rank projections",
                          hint="build it with model.linear=low_rank (convert_model_config(cfg, 'low_rank', ...))")
    linear, options, bias = "dense", {}, False
    if isinstance(source, nn.Module):
        cfg = getattr(source, "cfg", None)
        if isinstance(cfg, ModelConfig):
            linear, options, bias = cfg.linear, dict(cfg.linear_options), cfg.bias
        state = source.state_dict()
    else:
        state = dict(source)
        bias = any(f"{prefix}.bias" in state for prefix in projections(target))
    # a dense source also loads from a masked run's state: its masked `weight` entries are 0
    if linear == "dense":
        state = {k: v for k, v in state.items() if not k.endswith(".mask")}
    return load_converted(state.items(), target, source_linear=linear, source_options=options, bias=bias,
                          describe="the source model")
