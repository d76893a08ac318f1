"""Training-memory estimate of a run config, sized on the meta device, and the measured peak of a run.

Terms (bytes, one process; see docs/memory.md for every formula and how it was checked):

- parameters and buffers: the built meta model's tensors (fp32 weights; RoPE table, masks, supports);
- gradients: one fp32 gradient per trainable parameter;
- optimiser state: `optim/state_memory.py` (closed form for adamw, galore, fira);
- activations: the tensors autograd keeps from the forward of one micro-batch until its backward,
  counted per token in the style of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", section 4) for this decoder (pre-norm, SDPA flash attention, which keeps no T x T
  matrix, SwiGLU or GELU MLP), plus what each projection module keeps beyond its input (found by tracing
  it on the meta device) and, under autocast, the compute-dtype copies of the weights;
- loss head: the fused chunked head keeps a gradient of the hidden states and of the head weight; full
  logits would keep (rows, vocab) log-probabilities and their gradient;
- evaluation: no-grad forward with full logits over `eval.batch_size` rows (not concurrent with training
  activations or gradients);
- data: the loader's batch tensors; on the CPU also the memory-mapped token pages a run touches.

Peak = baseline + parameters + buffers + optimiser state + max(gradients + activations + head + copies +
loader, evaluation). The sum is an upper bound of the training peak: gradients fill while the
activations drain during the backward pass, so with one micro-batch per step the two never coexist
completely; with gradient accumulation they do (every micro-batch after the first).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainlab.config import ModelConfig, RunConfig
from pretrainlab.errors import ConfigError

MIB = 1 << 20
FP32 = 4  # parameters, gradients, residual stream and norms are fp32 in every precision mode


# ---------------------------------------------------------------------------------------------- measuring


def current_rss_bytes() -> int:
    """This process's resident set size now (Linux /proc/self/statm, else psutil)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (getrusage ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_memory_bytes(device: torch.device) -> int:
    """The measured peak: CUDA allocator peak (torch.cuda.max_memory_allocated, since `reset_peak_memory`
    at trainer start) on a GPU, else peak RSS. The CPU figure is the peak over the process's whole life
    (ru_maxrss cannot be reset): a run in a process that did other work first reports that work's peak
    when it was higher."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


def reset_peak_memory(device: torch.device) -> None:
    """Start the run's CUDA peak afresh (torch.cuda.reset_peak_memory_stats); a no-op on the CPU, whose
    peak RSS is the process's lifetime peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------------------------------------- estimate


@dataclass
class MemoryEstimate:
    """One column of `pretrainlab memory`: bytes per process for one model + optimiser + precision."""

    label: str
    linear: str
    optimizer: str
    precision: str
    params: int
    trainable: int
    param_bytes: int
    buffer_bytes: int
    grad_bytes: int
    optim_bytes: int
    activation_bytes: int  # blocks, final norm, embedding indices: one micro-batch
    weight_copy_bytes: int  # autocast compute-dtype weight copies kept for backward
    head_bytes: int  # loss head as configured (fused chunked or full logits)
    head_fused_bytes: int
    head_full_bytes: int
    head_kind: str  # "fused" | "full"
    loader_bytes: int
    eval_bytes: int  # no-grad evaluation forward (full logits), not concurrent with training activations
    matmul_params: int
    flops_per_token: float
    tokens_per_micro_batch: int
    baseline_bytes: int = 0  # measured RSS before the model (CPU runs only)
    data_mapped_bytes: int = 0  # touched memory-mapped token pages (CPU runs only)
    optim_detail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def static_bytes(self) -> int:
        """Alive for the whole run: parameters, buffers, optimiser state."""
        return self.param_bytes + self.buffer_bytes + self.optim_bytes

    @property
    def train_transient_bytes(self) -> int:
        """Alive at the end of a micro-batch's forward: gradients (from an earlier micro-batch or step),
        activations, weight copies, loss head, batch tensors."""
        return (self.grad_bytes + self.activation_bytes + self.weight_copy_bytes + self.head_bytes
                + self.loader_bytes)

    @property
    def total_bytes(self) -> int:
        """The peak estimate (see the module doc)."""
        return (self.baseline_bytes + self.data_mapped_bytes + self.static_bytes
                + max(self.train_transient_bytes, self.eval_bytes))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(static_bytes=self.static_bytes, train_transient_bytes=self.train_transient_bytes,
                   total_bytes=self.total_bytes)
        return out


def compute_bytes(dtype: torch.dtype | None) -> int:
    """Bytes per element of activations and matmul operands: 2 under bf16/fp16 autocast, else 4."""
    return FP32 if dtype is None else torch.empty((), dtype=dtype, device="meta").element_size()


def norm_bytes_per_token(cfg: ModelConfig) -> int:
    """What one norm keeps per token: RMSNorm 4 (2d + 1) (input, normalised x, 1/rms), LayerNorm 4 (d + 2)
    (input, mean, 1/std); fp32 in every precision mode (the residual stream is fp32)."""
    assert cfg.d_model
    return FP32 * (cfg.d_model + 2) if cfg.norm == "layernorm" else FP32 * (2 * cfg.d_model + 1)


def block_activation_bytes_per_token(cfg: ModelConfig, c: int) -> tuple[float, list[str]]:
    """Bytes one pre-norm block keeps for backward per token, the projections' own extras excluded
    (inputs of the projections included), and notes on what is not modelled.

    Checked term by term against the tensors autograd saves (saved_tensors_hooks, unique storages) on
    the CPU in fp32 and bf16 autocast (tests/train/test_memory.py):
    - RMSNorm: fp32 input, fp32 normalised x (the gain's gradient) and 1/rms: 4 (2d + 1);
      LayerNorm: input, mean, 1/std: 4 (d + 2);
    - attention: qkv input c d; qkv output c (H + 2 KV) D (v is a view of it); q, k after RoPE
      c (H + KV) D; flash logsumexp 4 H; attention output (= out-projection input) c d. No T x T term;
      QK-norm adds (H + KV)(4 D + 4) (and 4 (H + KV) D more under autocast, its fp32 upcast);
    - SwiGLU: gate_up input c d, its output c 2h, silu output c h, product (down input) c h;
      GELU: up input c d, up output c h, gelu output (down input) c h.
    """
    assert cfg.d_model and cfg.n_heads and cfg.n_kv_heads and cfg.mlp_hidden
    d, H, KV, h = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden
    D = d // H
    notes: list[str] = []
    norm = norm_bytes_per_token(cfg)
    if cfg.norm not in ("rmsnorm", "layernorm"):
        notes.append(f"model.norm={cfg.norm}: activations counted as for rmsnorm")
    attn = c * d + c * (H + 2 * KV) * D + c * (H + KV) * D + FP32 * H + c * d
    if cfg.attention != "sdpa":
        notes.append(f"model.attention={cfg.attention}: activations counted as for sdpa (flash, no T x T)")
    if cfg.qk_norm:
        attn += (H + KV) * (FP32 * D + FP32) + (0 if c == FP32 else FP32 * (H + KV) * D)
    if cfg.mlp == "gelu":
        mlp = c * d + 2 * c * h
    else:
        mlp = c * d + 4 * c * h
        if cfg.mlp != "swiglu":
            notes.append(f"model.mlp={cfg.mlp}: activations counted as for swiglu")
    if cfg.dropout:
        notes.append(
            f"model.dropout={cfg.dropout}: not modelled (SDPA then uses its math kernel, which keeps T x T "
            "attention probabilities per head, plus a mask per dropout); the activation figure is a lower bound"
        )
    return float(2 * norm + attn + mlp), notes


def _projections(block: nn.Module) -> list[nn.Module]:
    """The block's projection modules (what `make_linear` built): nn.Linear or any module with
    `matmul_params()`, outermost first, their children not listed again."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for m in block.modules():
        if id(m) in inside:
            continue
        if isinstance(m, nn.Linear) or callable(getattr(m, "matmul_params", None)):
            found.append(m)
            inside.update(id(c) for c in m.modules())
    return found


def _in_features(module: nn.Module) -> int:
    n = getattr(module, "in_features", None)
    if isinstance(n, int):
        return n
    return int(module.effective_weight().shape[1])  # type: ignore[operator]


def _trace_saved(module: nn.Module, n_tokens: int) -> tuple[int, int]:
    """(bytes autograd keeps beyond the input and the module's own tensors, elements of the parameters
    it keeps) for one forward of `n_tokens` rows, fp32, on the meta device (shapes only)."""
    own = {t.untyped_storage()._cdata for t in list(module.parameters()) + list(module.buffers())}
    matrices = {p.untyped_storage()._cdata: p.numel() for p in module.parameters()}
    x = torch.empty(n_tokens, _in_features(module), device="meta", requires_grad=True)
    skip = own | {x.untyped_storage()._cdata}
    extra: dict[int, int] = {}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key in matrices:
            kept[key] = matrices[key]
        elif key not in skip:
            extra[key] = t.untyped_storage().nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(extra.values()), sum(kept.values())


def projection_saved_bytes(module: nn.Module, n_tokens: int, c: int) -> tuple[float, int, int]:
    """What one projection keeps for backward beyond its input, from two meta traces (at n and 2n rows):
    (bytes per token, bytes independent of the tokens, parameter elements it keeps).

    The traces run in fp32; under autocast every kept tensor is a matmul operand or product in the
    compute dtype, so the bytes scale by c / 4 (e.g. a masked or SLTrain layer's materialised dense
    weight is kept as its compute-dtype copy; the fp32 product is transient), and each kept parameter
    costs a compute-dtype copy (autocast's weight cast, counted in `weight_copy_bytes`).
    """
    was_training = module.training
    try:
        try:
            s1, kept = _trace_saved(module, n_tokens)
            s2, _ = _trace_saved(module, 2 * n_tokens)
        except Exception:  # e.g. a training-only path that reads a value (.item()) on the meta device
            module.eval()
            s1, kept = _trace_saved(module, n_tokens)
            s2, _ = _trace_saved(module, 2 * n_tokens)
    finally:
        module.train(was_training)
    per_token = (s2 - s1) / n_tokens
    fixed = s1 - per_token * n_tokens
    scale = c / FP32
    return per_token * scale, int(round(fixed * scale)), kept


def head_bytes(cfg: ModelConfig, n_tokens: int, c: int, chunk_rows: int | None = None) -> tuple[int, int]:
    """(fused chunked head, full logits) bytes for a micro-batch of `n_tokens` rows at vocabulary V.

    Fused (objectives/fused_ce.py): the gradient of the hidden states c N d and of the head weight
    4 V d are kept from forward to backward, and one chunk of rows is live at a time: its logits in the
    compute dtype, fp32 log-probabilities and their compute-dtype copy, rows (4 + 2c) V; under autocast
    also the compute-dtype copies of the weight c V d and of the hidden states c N d.
    Full logits: the logits c N V, their fp32 copy (the same tensor in fp32) and the fp32 log-softmax
    kept for backward 4 N V, then in backward its gradient 4 N V: N V (c + 4 + 4) at most, plus the
    head matmul's input c N d (and its weight copy c V d under autocast).
    """
    from pretrainlab.objectives.fused_ce import default_chunk_rows

    assert cfg.vocab_size and cfg.d_model
    V, d, N = cfg.vocab_size, cfg.d_model, n_tokens
    dtype = torch.float32 if c == FP32 else torch.bfloat16
    rows = min(N, chunk_rows or default_chunk_rows(V, dtype))
    low = c != FP32
    fused = c * N * d + FP32 * V * d + rows * V * (FP32 + 2 * c) + (c * (V * d + N * d) if low else 0)
    full = N * V * (c + FP32 + FP32) + c * N * d + (c * V * d if low else 0)
    return fused, full


def eval_bytes(cfg: ModelConfig, rows: int, seq_len: int, c: int) -> int:
    """Evaluation's no-grad forward (eval/evaluate.py): full logits c, their fp32 copy and log-softmax
    over eval.batch_size x seq_len tokens; the widest intermediate of one block besides (c 3h per token:
    the MLP's gate_up output and activation)."""
    assert cfg.vocab_size and cfg.mlp_hidden
    n = rows * seq_len
    return n * cfg.vocab_size * (c + (FP32 if c != FP32 else 0) + FP32) + n * c * 3 * cfg.mlp_hidden


def _parameter_counts(model: nn.Module) -> tuple[int, int, int, int]:
    """(parameters, trainable, parameter bytes, buffer bytes), tied tensors once."""
    seen: set[int] = set()
    n = trainable = nbytes = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n += p.numel()
        nbytes += p.numel() * p.element_size()
        if p.requires_grad:
            trainable += p.numel()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return n, trainable, nbytes, buffers


def _fused_head(cfg: RunConfig, vocab: int) -> bool:
    from pretrainlab.objectives.next_token import FUSED_MIN_VOCAB

    fused = cfg.objective_options.get("fused")
    return bool(fused) if fused is not None else vocab >= FUSED_MIN_VOCAB


def estimate_memory(
    cfg: RunConfig,
    model_cfg: ModelConfig,
    *,
    micro_batch_size: int,
    global_rows: int,
    compute_dtype: torch.dtype | None,
    label: str | None = None,
) -> MemoryEstimate:
    """The memory estimate of training `model_cfg` (resolved) with `cfg`'s optimiser, sequence length,
    objective and evaluation settings, one process; the model is built on the meta device (nothing is
    allocated, a 1B config takes well under a second)."""
    from pretrainlab.model.decoder import Decoder, build_model
    from pretrainlab.model.flops import flops_per_token, matmul_params
    from pretrainlab.optim.state_memory import optimizer_state_breakdown

    c = compute_bytes(compute_dtype)
    T = cfg.data.seq_len
    N = micro_batch_size * T
    with torch.device("meta"):
        model = build_model(model_cfg)
    assert isinstance(model, Decoder)
    model.train()
    params, trainable, param_bytes, buffer_bytes = _parameter_counts(model)
    state = optimizer_state_breakdown(model, cfg.optim)
    per_token, notes = block_activation_bytes_per_token(model_cfg, c)

    proj_per_token = 0.0
    proj_fixed = 0
    copy_elems = 0
    cache: dict[tuple[Any, ...], tuple[float, int, int]] = {}
    for block in model.blocks:
        for proj in _projections(block):
            key = (type(proj), tuple((n, tuple(p.shape)) for n, p in proj.named_parameters()), repr(proj))
            if key not in cache:
                cache[key] = projection_saved_bytes(proj, N, c)
            pt, fixed, kept = cache[key]
            proj_per_token += pt
            proj_fixed += fixed
            copy_elems += kept
    final_norm = norm_bytes_per_token(model_cfg)
    indices = 8  # int64 token ids kept by the embedding's backward
    activations = int(round(N * (model_cfg.n_layers * per_token + proj_per_token + final_norm + indices)))
    activations += proj_fixed
    weight_copies = c * copy_elems if c != FP32 else 0

    fused, full = head_bytes(model_cfg, N, c, cfg.objective_options.get("chunk_rows"))
    assert model_cfg.vocab_size
    head_kind = "fused" if _fused_head(cfg, model_cfg.vocab_size) else "full"
    loader = global_rows * (T + 1) * 8 * 2  # the gathered int64 rows and the batch built from them
    evaluation = eval_bytes(model_cfg, cfg.eval.batch_size, T, c) + weight_copies

    if model_cfg.linear == "masked":
        notes.append("model.linear=masked stores every weight dense (the mask is applied in the forward): "
                     "parameters, gradients and optimiser state equal dense; only the theoretical FLOPs shrink, "
                     "and masked dense matmuls save no time on CPU")
    elif model_cfg.linear == "sparse_low_rank":
        notes.append("sparse_low_rank materialises each dense (out, in) weight in the forward (pure PyTorch), "
                     "kept for backward: counted in the activations")
    if cfg.objective not in ("next_token",):
        notes.append(f"objective={cfg.objective}: a teacher or extra forward passes are not counted")
    if state.note:
        notes.append(state.note)
    if cfg.parallel != "none":
        notes.append(f"parallel={cfg.parallel}: per process; DDP adds gradient buckets (about one more "
                     "gradient copy), FSDP shards parameters, gradients and state over the processes (not modelled)")
    return MemoryEstimate(
        label=label or f"{model_cfg.linear} + {cfg.optim.name}",
        linear=model_cfg.linear,
        optimizer=cfg.optim.name,
        precision="fp32" if compute_dtype is None else f"{str(compute_dtype).removeprefix('torch.')} autocast",
        params=params,
        trainable=trainable,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        grad_bytes=trainable * FP32,
        optim_bytes=state.total,
        activation_bytes=activations,
        weight_copy_bytes=weight_copies,
        head_bytes=fused if head_kind == "fused" else full,
        head_fused_bytes=fused,
        head_full_bytes=full,
        head_kind=head_kind,
        loader_bytes=loader,
        eval_bytes=evaluation,
        matmul_params=matmul_params(model),
        flops_per_token=float(flops_per_token(model_cfg, T)),
        tokens_per_micro_batch=N,
        optim_detail=state.as_dict(),
        notes=notes,
    )


def dense_adamw(cfg: RunConfig) -> RunConfig:
    """The same run with dense projections and AdamW (the comparison column)."""
    model = cfg.model.model_copy(update={"linear": "dense", "linear_options": {}})
    optim = cfg.optim.model_copy(update={"name": "adamw", "options": {}})
    return cfg.model_copy(update={"model": model, "optim": optim})


# ---------------------------------------------------------------------------------------------- runs


def mapped_data_bytes(data: Any, cfg: RunConfig) -> int:
    """Token-file pages a CPU run touches (memory-mapped pages count in its RSS): at most the files, at
    most one page more than each window read (train), and the validation tokens evaluation reads."""
    from pretrainlab.train.batch_plan import plan_batches

    plan = plan_batches(cfg, 1)
    total = 0
    for domain in data.domains:
        train = data.shard(domain, "train").tokens
        per_row = (cfg.data.seq_len + 1) * train.itemsize + 4096
        total += min(int(train.nbytes), cfg.train.steps * plan.global_rows * per_row)
        val = data.shard(domain, "val").tokens
        cap = cfg.eval.max_tokens_per_domain
        total += int(val.nbytes) if cap is None else min(int(val.nbytes), cap * val.itemsize + 4096)
    return total


def estimate_for_trainer(trainer: Any, baseline_rss: int | None) -> MemoryEstimate:
    """The estimate of a Trainer's run for its end line: the run's model config and batch plan; on the
    CPU plus the RSS measured before the model was built and the touched token pages."""
    est = estimate_memory(
        trainer.cfg,
        trainer.model_cfg,
        micro_batch_size=trainer.plan.micro_batch_size,
        global_rows=trainer.plan.global_rows // max(1, trainer.ctx.world_size),
        compute_dtype=trainer.autocast_dtype,
        label="run",
    )
    if trainer.device.type != "cuda":
        est.baseline_bytes = int(baseline_rss or 0)
        with contextlib.suppress(Exception):  # an unusual data layout only loses this term
            est.data_mapped_bytes = mapped_data_bytes(trainer.data, trainer.cfg)
    return est


# ---------------------------------------------------------------------------------------------- command


def resolve_for_memory(cfg: RunConfig) -> tuple[ModelConfig, list[str]]:
    """The run's resolved model config and notes; the vocabulary comes from the prepared data when
    `data.path` exists, else from `model.vocab_size` (said in a note), else a ConfigError."""
    import pretrainlab.model.decoder  # noqa: F401  (registers every linear)
    from pretrainlab.model.resolve import resolve_model_config

    notes: list[str] = []
    path = Path(cfg.data.path)
    if (path / "manifest.json").is_file():
        from pretrainlab.data.prepared import PreparedData

        vocab = PreparedData(path).vocab_size
    elif cfg.model.vocab_size is not None:
        vocab = cfg.model.vocab_size
        notes.append(f"data.path={cfg.data.path} is not a prepared-data folder: vocabulary from "
                     f"model.vocab_size={vocab}")
    else:
        raise ConfigError(
            f"data.path={cfg.data.path} is not a prepared-data folder (no manifest.json), so the vocabulary "
            "size is unknown",
            hint="pass model.vocab_size=N (e.g. model.vocab_size=32000) or point data.path at prepared data",
        )
    return resolve_model_config(cfg.model, vocab_size=vocab, seq_len=cfg.data.seq_len), notes


def command_compute_dtype(cfg: RunConfig) -> torch.dtype | None:
    """The autocast dtype the run would use on its device (`device=auto`: CUDA when present, else CPU);
    a CUDA config sized on a machine without a GPU takes bf16 unless train.precision=fp32."""
    from pretrainlab.train.precision import autocast_dtype

    name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        return None if cfg.train.precision == "fp32" else torch.bfloat16
    return autocast_dtype(cfg.train.precision, device)


def estimate_columns(cfg: RunConfig, variants: list[tuple[str, RunConfig]]) -> tuple[list[MemoryEstimate], list[str]]:
    """Columns for `pretrainlab memory`: the configured recipe, each variant, then dense + AdamW."""
    from pretrainlab.train.batch_plan import plan_batches

    plan = plan_batches(cfg, 1)
    columns: list[MemoryEstimate] = []
    notes: list[str] = []
    runs = [(f"recipe: {cfg.model.linear} + {cfg.optim.name}", cfg), *variants,
            ("dense + adamw", dense_adamw(cfg))]
    for label, run in runs:
        model_cfg, extra = resolve_for_memory(run)
        notes += [n for n in extra if n not in notes]
        est = estimate_memory(run, model_cfg, micro_batch_size=plan.micro_batch_size, global_rows=plan.global_rows,
                              compute_dtype=command_compute_dtype(run), label=label)
        columns.append(est)
    return columns, notes


def mib(n: float) -> float:
    return n / MIB


def human_bytes(n: float) -> str:
    """Binary units: 512 B, 3.2 MiB, 4.10 GiB."""
    if not math.isfinite(n):
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n)} B"


def summary_line(trainer: Any) -> str:
    """The startup summary's memory line; computes and keeps `trainer.memory_estimate` for the end line.
    Accounting never stops a run: a failure is reported on the line instead."""
    try:
        est = estimate_for_trainer(trainer, getattr(trainer, "memory_baseline_rss", None))
    except Exception as e:  # noqa: BLE001
        trainer.memory_estimate = None
        return f"memory       estimate unavailable ({type(e).__name__}: {e})"
    trainer.memory_estimate = est
    where = (f"; + {human_bytes(est.baseline_bytes)} process baseline RSS, {human_bytes(est.data_mapped_bytes)} "
             "mapped data" if est.baseline_bytes else "")
    return (f"memory       estimate {human_bytes(est.total_bytes)} peak: parameters {human_bytes(est.param_bytes)}, "
            f"gradients {human_bytes(est.grad_bytes)}, optimiser {human_bytes(est.optim_bytes)}, activations "
            f"{human_bytes(est.activation_bytes + est.weight_copy_bytes + est.head_bytes)} per micro-batch{where}")


def end_line_fields(trainer: Any) -> dict[str, float]:
    """`peak_memory_mb` (CPU: peak RSS of the process; CUDA: max_memory_allocated) and
    `memory_estimate_mb` (the estimate, when it could be made), in MiB; on the CPU also
    `memory_baseline_mb`, the RSS before the model that the estimate includes."""
    out = {"peak_memory_mb": round(mib(peak_memory_bytes(trainer.device)), 1)}
    est = getattr(trainer, "memory_estimate", None)
    if est is not None:
        out["memory_estimate_mb"] = round(mib(est.total_bytes), 1)
        if est.baseline_bytes:
            out["memory_baseline_mb"] = round(mib(est.baseline_bytes), 1)
    return out
