"""SPDF replication: sparse pre-training, then dense fine-tuning (Thangarasa et al. 2023, arXiv 2303.10464).

`pretrainlab replicate spdf --scale tiny|small`. The recipe itself is configuration: sparse pre-training is
`model.linear=masked` with `model.linear_options.sparsity` (a static uniform-random unstructured mask per
attention and MLP projection, the same sparsity everywhere, embeddings/head/norms dense), dense fine-tuning
is a `model.linear=dense` run with `init_from` the sparse run (the masked weights start at 0 and train). This
module is the protocol of `../shared/papers/papers-model.md` §3(c):

1. pre-train dense, 50% and 75% sparse models for the same steps and tokens on the pre-training domains,
   `--seeds` seeds each (the mask is drawn from the run's seed);
2. fine-tune every pre-trained model densely on a held-out domain for a short budget (fresh AdamW and
   schedule, as fine-tuning on a downstream task); a dense model trained from scratch on the same
   fine-tuning budget shows what pre-training is worth there;
3. claims (rules stated before running, from the CPU protocol): pre-training loss ordered
   dense < 50% < 75%; after dense fine-tuning the 75% (and 50%) model's gap to dense is at most half its
   pre-training gap; the theoretical pre-training FLOPs saved, next to the measured tokens/s of every arm
   (masked dense matmuls are dense matmuls: no time is saved on CPU).

Data: `--data PREPARED` (at least two domains: the last is held out for fine-tuning, the others are
pre-trained on), else the local corpora folder when present (pre-train on TinyStories + WikiText-2,
fine-tune on three Project Gutenberg novels), else the built-in stdlib corpus split by domain (pre-train on
the top-level stdlib modules' code, fine-tune on the prose of the pydoc topics). Byte vocabulary throughout,
so the embedding is small and the projections carry most of the parameters and FLOPs.

Differences from the paper: GPT-2 Small/GPT-3 XL on the Pile with downstream data-to-text and summarisation
tasks (BLEU, ROUGE) there; here a sub-million-parameter model, a language-modelling loss on a held-out
domain, and a fixed learning rate per scale.
"""

from __future__ import annotations

import math
import statistics
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.errors import DataError
from pretrainlab.science.replication import (
    Claim,
    Replication,
    ReplicationContext,
    ReplicationResult,
    mean_sd,
    register_replication,
    spread_text,
)
from pretrainlab.science.corpora import CORPORA

PAPER = ("SPDF: Sparse Pre-training and Dense Fine-tuning for Large Language Models (Thangarasa et al., 2023), "
         "arXiv 2303.10464")


@dataclass(frozen=True)
class Scale:
    """One scale of the protocol: model shape, token budgets and step counts."""

    n_layers: int
    d_model: int
    n_heads: int
    seq_len: int
    batch_rows: int
    pretrain_tokens: int  # unique pre-training tokens, split evenly over the pre-training domains
    finetune_tokens: int  # unique fine-tuning tokens of the held-out domain
    val_tokens: int  # validation tokens per domain
    pretrain_steps: int
    finetune_steps: int
    lr: float
    finetune_lr: float
    sparsities: tuple[float, ...] = (0.5, 0.75)
    evals_per_run: int = 4


SCALES: dict[str, Scale] = {
    # About 10 minutes on 2 CPU cores with 3 seeds (measured figures in the closing note).
    "tiny": Scale(n_layers=4, d_model=96, n_heads=4, seq_len=128, batch_rows=16,
                  pretrain_tokens=524_288, finetune_tokens=131_072, val_tokens=32_768,
                  pretrain_steps=300, finetune_steps=60, lr=3e-3, finetune_lr=1e-3, evals_per_run=2),
    # Wider and longer (not timed here): hours on 2 CPU cores, minutes on a GPU.
    "small": Scale(n_layers=6, d_model=192, n_heads=6, seq_len=128, batch_rows=32,
                   pretrain_tokens=1_048_576, finetune_tokens=262_144, val_tokens=65_536,
                   pretrain_steps=600, finetune_steps=120, lr=2e-3, finetune_lr=7e-4),
}


# ------------------------------------------------------------------------------------------------ data


@dataclass
class DomainData:
    """A prepared folder with the pre-training domains and one held-out fine-tuning domain."""

    source: Path
    pretrain: list[str]
    finetune: str
    origin: str  # where it came from, for the notes


def prepare_domains(ctx: ReplicationContext) -> DomainData:
    """`--data` (last domain held out), else the local corpora, else the stdlib split by domain (byte tokens)."""
    from pretrainlab.data.prepared import PreparedData

    if ctx.data is not None:
        domains = PreparedData(ctx.data).domains
        if len(domains) < 2:
            raise DataError(f"--data {ctx.data}: SPDF needs at least two domains (pre-training and a held-out "
                            f"fine-tuning domain), it has {domains}",
                            hint="prepare the data with sources of two or more domains")
        return DomainData(Path(ctx.data), domains[:-1], domains[-1], f"--data {ctx.data}")
    corpora = _corpora_sources()
    if corpora is not None:
        path = _prepare(ctx.out / "data" / "corpora-bytes", corpora)
        return DomainData(path, ["stories", "wiki"], "books",
                          f"{CORPORA}: TinyStories (validation file) + WikiText-2 (valid) for pre-training, "
                          "Project Gutenberg novels (Sherlock Holmes, Botchan, The Wizard of Oz) for fine-tuning")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [
        {"type": "text", "domain": "code", "paths": [(stdlib / "*.py").as_posix()], "split": "file"},
        {"type": "text", "domain": "docs", "paths": [(stdlib / "pydoc_data" / "topics.py").as_posix()],
         "split": "line"},
    ]
    path = _prepare(ctx.out / "data" / "stdlib-domains-bytes", sources)
    return DomainData(path, ["code"], "docs", "the built-in stdlib corpus: top-level modules' code for "
                      "pre-training, the pydoc topics' prose (pydoc_data/topics.py) for fine-tuning")


def _corpora_sources() -> list[dict[str, Any]] | None:
    books = [CORPORA / "gutenberg-books" / f for f in ("sherlock_holmes.txt", "botchan.txt", "wizard_of_oz.txt")]
    files = {"stories": [CORPORA / "tinystories" / "tinystories_val.txt"],
             "wiki": [CORPORA / "wikitext-2" / "wiki.valid.tokens"], "books": books}
    if not all(p.is_file() for paths in files.values() for p in paths):
        return None
    return [{"type": "text", "domain": d, "paths": [p.as_posix() for p in paths], "split": "blank_lines"}
            for d, paths in files.items()]


def _prepare(path: Path, sources: list[dict[str, Any]]) -> Path:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if (path / "manifest.json").is_file():
        return path
    cfg = validate(PrepareConfig, {"sources": sources, "tokenizer": {"kind": "bytes"},
                                   "validation": {"fraction": 0.05}, "output": str(path), "overwrite": True},
                   source="replication data")
    return Path(prepare(cfg, progress=False))


def token_budget(ctx: ReplicationContext, data: DomainData, domains: list[str], train_tokens: int,
                 val_tokens: int) -> Path:
    """A fixed budget of `train_tokens` unique tokens over `domains` (seeded random chunks of the source)."""
    from pretrainlab.data.subset import write_token_budget

    name = "budget-" + "+".join(domains) + f"-{train_tokens}"
    return write_token_budget(data.source, ctx.out / "data" / name, train_tokens=train_tokens,
                              val_tokens=val_tokens, seed=0, domains=domains).path


# ------------------------------------------------------------------------------------------------ runs


def base_tree(scale: Scale, data: Path, steps: int, lr: float) -> dict[str, Any]:
    """The RunConfig shared by every run of a phase (AdamW, cosine with 5% warm-up, clip 1.0, fp32)."""
    return {
        "data": {"path": data.as_posix(), "seq_len": scale.seq_len, "mode": "random"},
        "model": {"n_layers": scale.n_layers, "d_model": scale.d_model, "n_heads": scale.n_heads},
        "optim": {"name": "adamw", "lr": lr, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"name": "cosine", "warmup_fraction": 0.05, "min_lr_ratio": 0.1},
        "train": {"steps": steps, "global_batch_tokens": scale.seq_len * scale.batch_rows,
                  "micro_batch_size": scale.batch_rows, "grad_clip": 1.0, "precision": "fp32", "compile": False,
                  "progress": False, "log_every": 10},
        "eval": {"every": max(1, steps // scale.evals_per_run), "max_tokens_per_domain": scale.val_tokens,
                 "batch_size": 32},
    }


def resolved_model(scale: Scale, vocab_size: int) -> dict[str, Any]:
    """The dense model section with every size written out. A fine-tuning run names them all, so its config
    equals the one its run folder records (init_from fills unset sizes from the source and records them) and
    a second `replicate` skips the finished runs instead of finding a changed config."""
    from pretrainlab.config import ModelConfig
    from pretrainlab.model import resolve_model_config

    cfg = ModelConfig(n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads, linear="dense")
    return resolve_model_config(cfg, vocab_size=vocab_size, seq_len=scale.seq_len).model_dump(mode="json")


def arm_name(sparsity: float) -> str:
    return "dense" if sparsity == 0 else f"sparse{round(100 * sparsity)}"


def pretrain_arms(scale: Scale) -> dict[str, dict[str, Any]]:
    arms: dict[str, dict[str, Any]] = {"dense": {"model.linear": "dense"}}
    for s in scale.sparsities:
        arms[arm_name(s)] = {"model.linear": "masked", "model.linear_options": {"sparsity": s}}
    return arms


def run_protocol(ctx: ReplicationContext, scale: Scale) -> ReplicationResult:
    """Pre-train every arm x seed, fine-tune each run densely (per seed, `init_from` that run), build claims."""
    from pretrainlab.science.arms import run_arms

    data = prepare_domains(ctx)
    pre_data = token_budget(ctx, data, data.pretrain, scale.pretrain_tokens, scale.val_tokens)
    ft_data = token_budget(ctx, data, [data.finetune], scale.finetune_tokens, scale.val_tokens)
    seeds = list(range(1, ctx.seeds + 1))
    _say(f"data: pre-train on {'+'.join(data.pretrain)} ({pre_data}), fine-tune on {data.finetune} ({ft_data})")

    _say(f"stage 1/2: pre-training {', '.join(pretrain_arms(scale))} x {len(seeds)} seed(s), "
         f"{scale.pretrain_steps} steps each")
    pre = run_arms(ctx, "pretrain", base_tree(scale, pre_data, scale.pretrain_steps, scale.lr),
                   pretrain_arms(scale), seeds)

    _say(f"stage 2/2: dense fine-tuning of every pre-trained run on {data.finetune}, {scale.finetune_steps} steps; "
         "and a dense model from scratch on the same budget")
    ft_base = base_tree(scale, ft_data, scale.finetune_steps, scale.finetune_lr)
    ft_base["model"] = resolved_model(scale, _vocab_size(pre_data))
    finetuned: dict[str, list[dict[str, Any]]] = {arm: [] for arm in pre}
    ft_runs: dict[str, list[Path]] = {arm: [] for arm in pre}
    scratch: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):  # init_from differs per seed: one sweep per seed
        arms = {arm: {"model.linear": "dense", "init_from": res.runs[i].resolve().as_posix()}
                for arm, res in pre.items()}
        arms["scratch"] = {"model.linear": "dense"}
        out = run_arms(ctx, f"finetune-s{seed}", ft_base, arms, [seed])
        for arm in pre:
            finetuned[arm].append(out[arm].ends[0])
            ft_runs[arm].append(out[arm].runs[0])
        scratch.append(out["scratch"].ends[0])
    _say("timing training steps of every arm back to back (1 thread)")
    figures = Figures(
        pretrain={arm: res.values("val_loss") for arm, res in pre.items()},
        finetune={arm: [_num(e.get("val_loss")) for e in ends] for arm, ends in finetuned.items()},
        scratch=[_num(e.get("val_loss")) for e in scratch],
        flops={arm: _num(res.ends[0].get("flops_per_token")) for arm, res in pre.items()},
        tokens_per_s=measure_tokens_per_s(scale, _vocab_size(pre_data)),
        sparsity={arm_name(s): s for s in scale.sparsities},
        sweep_tokens_per_s={arm: [train_tokens_per_s(r) for r in res.runs] for arm, res in pre.items()},
    )
    result = build_result(ctx, scale, figures)
    result.notes.insert(0, f"Data: {data.origin}; {scale.pretrain_tokens:,} unique pre-training tokens, "
                        f"{scale.finetune_tokens:,} unique fine-tuning tokens, byte vocabulary.")
    result.details["runs"] = {"pretrain": {a: [str(p) for p in r.runs] for a, r in pre.items()},
                              "finetune": {a: [str(p) for p in ps] for a, ps in ft_runs.items()}}
    result.details["data"] = {"pretrain": str(pre_data), "finetune": str(ft_data), "origin": data.origin}
    _plot(figures, ctx.out / "plots" / "spdf.png")
    return result


def measure_tokens_per_s(scale: Scale, vocab_size: int, steps: int = 3, rounds: int = 5) -> dict[str, list[float]]:
    """Training tokens/s of every arm's model, timed in this process on one thread: forward, backward and AdamW
    step (masked weights re-zeroed after it, as in training) on one random batch of the scale's shape, the arms
    interleaved round by round so that the machine's load falls on each alike. One figure per round."""
    import time

    import torch
    import torch.nn.functional as F

    from pretrainlab.config import ModelConfig
    from pretrainlab.model import build_model, resolve_model_config
    from pretrainlab.model.masked_linear import rezero_masked

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        arms: dict[str, Any] = {}
        for arm, overrides in pretrain_arms(scale).items():
            cfg = ModelConfig(n_layers=scale.n_layers, d_model=scale.d_model, n_heads=scale.n_heads,
                              linear=overrides["model.linear"],
                              linear_options=overrides.get("model.linear_options", {}))
            model = build_model(resolve_model_config(cfg, vocab_size=vocab_size, seq_len=scale.seq_len))
            arms[arm] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
        batch = torch.randint(0, vocab_size, (scale.batch_rows, scale.seq_len + 1))

        def step(model: Any, opt: Any) -> None:
            logits = model.logits(model(batch[:, :-1]))
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rezero_masked(model)

        for model, opt in arms.values():
            step(model, opt)  # warm-up: allocations, AdamW state
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(rounds):
            for arm, (model, opt) in arms.items():
                start = time.perf_counter()
                for _ in range(steps):
                    step(model, opt)
                rates[arm].append(steps * scale.batch_rows * scale.seq_len / (time.perf_counter() - start))
        return rates
    finally:
        torch.set_num_threads(threads)


def _vocab_size(data: Path) -> int:
    from pretrainlab.data.prepared import PreparedData

    return int(PreparedData(data).manifest["tokenizer"]["vocab_size"])


def train_tokens_per_s(run_dir: Path) -> float:
    """Median training tokens/s over the run's train lines (the first line, which includes start-up, left out)."""
    from pretrainlab.train.metrics import read_metrics

    rates = [float(r["tokens_per_s"]) for r in read_metrics(run_dir / "metrics.jsonl")
             if isinstance(r, dict) and "event" not in r and isinstance(r.get("tokens_per_s"), (int, float))]
    rates = rates[1:] or rates
    return statistics.median(rates) if rates else math.nan


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


# ------------------------------------------------------------------------------------------------ claims


@dataclass
class Figures:
    """Every figure the claims use: validation losses per arm (seed order), FLOPs per token, tokens/s."""

    pretrain: dict[str, list[float]]  # arm -> pre-training val_loss per seed (pre-training domains)
    finetune: dict[str, list[float]]  # arm -> val_loss per seed after dense fine-tuning (held-out domain)
    scratch: list[float]  # dense from scratch on the fine-tuning budget, per seed
    flops: dict[str, float]  # arm -> theoretical training FLOPs per token (masks counted)
    tokens_per_s: dict[str, list[float]]  # arm -> training tokens/s timed back to back (one figure per round)
    sparsity: dict[str, float]  # sparse arm -> its sparsity
    sweep_tokens_per_s: dict[str, list[float]] = field(default_factory=dict)  # arm -> median tokens/s of each run


def build_result(ctx: ReplicationContext, scale: Scale, f: Figures) -> ReplicationResult:
    sparse = list(f.sparsity)
    claims = [ordered_claim(f)]
    claims += [gap_claim(f, arm) for arm in reversed(sparse)]  # the 75% claim first (the paper's headline)
    claims.append(flops_claim(f, sparse[-1]))
    notes = [
        f"Model: {scale.n_layers} layers x {scale.d_model} wide, {scale.n_heads} heads, sequence length "
        f"{scale.seq_len}; pre-training {scale.pretrain_steps} steps of {scale.seq_len * scale.batch_rows:,} tokens "
        f"(lr {scale.lr}), dense fine-tuning {scale.finetune_steps} steps (lr {scale.finetune_lr}, fresh AdamW and "
        "cosine schedule, masked weights start at 0). The paper fine-tunes GPT-2 Small / GPT-3 XL on data-to-text "
        "and summarisation tasks; here the fine-tuning loss is language modelling on a held-out domain.",
        "Gaps are paired by seed (the same seed's dense and sparse runs); a pre-training gap compares losses on the "
        "pre-training domains, a fine-tuning gap on the held-out domain.",
        "FLOPs are theoretical (6 x live matmul weights + attention per token). Masked weights are multiplied as "
        "zeros by dense matmuls, so a masked model saves no time on CPU (applying the mask even costs a little); "
        "the paper's savings need hardware that skips zeros (Cerebras CS-2). The tokens/s in the FLOPs claim are "
        "timed back to back in one process on one thread; the sweep runs' own tokens/s (two runs at a time on a "
        "shared machine, details.sweep_tokens_per_s) do not compare across arms.",
        f"Dense from scratch on the fine-tuning budget: {mean_sd(f.scratch)[0]:.3f} ({spread_text(f.scratch)}), "
        "vs dense-pretrained then fine-tuned "
        f"{mean_sd(f.finetune['dense'])[0]:.3f}: what pre-training is worth on the held-out domain.",
    ]
    details = {"scale": scale.__dict__, "pretrain_val_loss": f.pretrain, "finetune_val_loss": f.finetune,
               "scratch_val_loss": f.scratch, "flops_per_token": f.flops, "tokens_per_s": f.tokens_per_s,
               "sweep_tokens_per_s": f.sweep_tokens_per_s}
    return ReplicationResult(name="spdf", paper=PAPER, scale=ctx.scale, seeds=ctx.seeds, wall_s=0.0,
                             claims=claims, notes=notes, details=details)


def ordered_claim(f: Figures) -> Claim:
    arms = ["dense", *f.sparsity]
    means = [mean_sd(f.pretrain[a])[0] for a in arms]
    order = " < ".join(f"{a} {m:.3f}" for a, m in zip(arms, means))
    return Claim(
        claim="Pre-training validation loss rises with sparsity at the same steps and tokens: seed means ordered "
              + " < ".join(arms) + " (CPU protocol, papers-model.md §3(c)).",
        paper_figure="loss rises with sparsity (50%, 75%) at equal tokens, GPT-2 Small / GPT-3 XL on the Pile [mem]",
        our_figure=order if all(b > a for a, b in zip(means, means[1:])) else _chain(arms, means),
        spread="; ".join(f"{a}: {spread_text(f.pretrain[a])}" for a in arms),
        holds=all(b > a for a, b in zip(means, means[1:])) if all(math.isfinite(m) for m in means) else None,
    )


def gap_claim(f: Figures, arm: str) -> Claim:
    """Gap to dense (paired by seed) before and after dense fine-tuning: holds when the mean fine-tuning gap is
    at most half the mean pre-training gap; n/a when there is no pre-training gap to shrink."""
    pct = round(100 * f.sparsity[arm])
    pre_gaps = [s - d for s, d in zip(f.pretrain[arm], f.pretrain["dense"])]
    ft_gaps = [s - d for s, d in zip(f.finetune[arm], f.finetune["dense"])]
    pre, ft = mean_sd(pre_gaps)[0], mean_sd(ft_gaps)[0]
    claim = (f"After dense fine-tuning the {pct}% sparse-pretrained model's gap to the dense-pretrained one is at "
             f"most half its pre-training gap (mean over seeds; CPU protocol, papers-model.md §3(c)).")
    paper = ("75% sparse GPT-3 XL: no significant loss in downstream metrics after dense fine-tuning, "
             "2.5x fewer pre-training FLOPs [abs]" if pct == 75 else
             "50% sparse GPT-2 Small / GPT-3 XL: downstream metrics near dense after dense fine-tuning [mem]")
    if not (math.isfinite(pre) and math.isfinite(ft)):
        return Claim(claim, paper, f"gap not measured (pre-training {pre:.3f}, fine-tuned {ft:.3f})", "-", None)
    our = f"gap {pre:+.3f} -> {ft:+.3f} nats"
    if pre <= 0:
        return Claim(claim, paper, our + f": no pre-training gap to shrink (the {pct}% model was not worse)",
                     spread_text(pre_gaps), None)
    ratios = [g / p for g, p in zip(ft_gaps, pre_gaps) if p > 0]
    return Claim(claim, paper, our + f" (kept {ft / pre:.0%} of the gap)",
                 f"pre-training gap {spread_text(pre_gaps)}; fine-tuned gap {spread_text(ft_gaps)}; kept per seed "
                 + ", ".join(f"{r:.0%}" for r in ratios), bool(ft <= 0.5 * pre + 1e-9))  # 1e-9: float rounding


def flops_claim(f: Figures, arm: str) -> Claim:
    """Theoretical pre-training FLOPs saved by the sparsest arm (rule: at least 2x fewer), with measured speed."""
    pct = round(100 * f.sparsity[arm])
    ratio = f.flops["dense"] / f.flops[arm] if f.flops[arm] > 0 else math.nan
    speed = {a: statistics.median(v) if v else math.nan for a, v in f.tokens_per_s.items()}
    wall = speed[arm] / speed["dense"] if speed["dense"] > 0 else math.nan
    saved = ", ".join(f"{a}: {1 - f.flops[a] / f.flops['dense']:.0%} fewer FLOPs, {speed[a]:,.0f} tok/s"
                      for a in f.flops)
    return Claim(
        claim=f"{pct}% sparse pre-training needs >= 2x fewer theoretical training FLOPs than dense (FLOPs per token "
              "with the mask counted; the projections' share drops by the sparsity, embeddings/head/attention "
              "scores stay). Wall time: masked dense matmuls save none on CPU.",
        paper_figure="2.5x fewer pre-training FLOPs at 75% (GPT-3 XL) [abs]",
        our_figure=f"{ratio:.2f}x fewer FLOPs; measured speed-up {wall:.2f}x (median tokens/s timed back to back, "
                   f"1 thread; {saved})",
        spread="tokens/s over timing rounds: " + "; ".join(
            f"{a}: {min(v):,.0f}..{max(v):,.0f} ({len(v)} rounds)" if v else f"{a}: not timed"
            for a, v in f.tokens_per_s.items()),
        holds=bool(ratio >= 2) if math.isfinite(ratio) else None,
    )


def _chain(names: list[str], values: list[float]) -> str:
    out = f"{names[0]} {values[0]:.3f}"
    for a, b, name in zip(values, values[1:], names[1:]):
        out += (" < " if b > a else " > " if b < a else " = ") + f"{name} {b:.3f}"
    return out


def _plot(f: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    arms = list(f.pretrain)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for phase, values, marker in (("pre-training (pre-training domains)", f.pretrain, "o"),
                                  ("after dense fine-tuning (held-out domain)", f.finetune, "s")):
        means = [mean_sd(values[a])[0] for a in arms]
        sds = [mean_sd(values[a])[1] for a in arms]
        ax.errorbar(range(len(arms)), means, yerr=sds, marker=marker, capsize=4, label=phase)
    ax.axhline(mean_sd(f.scratch)[0], color="grey", ls=":", label="dense from scratch on the fine-tuning budget")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_xlabel("pre-training arm")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _say(text: str) -> None:
    print(f"[spdf] {text}", flush=True)


def _run(ctx: ReplicationContext) -> ReplicationResult:
    return run_protocol(ctx, SCALES[ctx.scale])


register_replication(
    Replication(
        name="spdf",
        paper=PAPER,
        default_seeds=3,
        run=_run,
        summary="dense, 50% and 75% masked pre-training, then dense fine-tuning on a held-out domain; gaps and FLOPs",
    )
)
