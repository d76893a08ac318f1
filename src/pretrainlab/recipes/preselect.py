"""PreSelect: predictive data selection (Shum et al. 2025, "Predictive Data Selection: The Data That Predicts
Is the Data That Teaches", arXiv 2503.00808).

Compression efficiency (normalised loss) of several models on text in a benchmark's domain predicts their
ranking on that benchmark; PreSelect keeps the documents on which the models' losses predict the ranking,
on the hypothesis that such data also teaches the ability. The steps, and where they live:

1. `reference_bpb`: each reference model's bits per byte on each document (the paper's bits per character:
   summed NLL over the document's size; bytes here, so models with different tokenizers compare). Every
   document is cut into disjoint windows of the model's context, the first predicted from end-of-text as
   in training, and all documents' windows are scored in length-sorted batches (eval/likelihood.py
   `score_continuations`, fp32 log-probabilities): deterministic, and as fast as the batch allows.
2. `predictive_strength`: the fraction of model pairs (with different benchmark scores) whose loss order
   on the document agrees with their benchmark order: the better model has strictly lower loss. The
   official code counts these concordant pairs (15 of 15 for its 6 Llama models); 1.0 here is every pair.
3. `label_documents`: positives are the documents with strength 1 (every pair agrees), negatives as many of
   the lowest-strength ones (ties in a seeded order); a hashed n-gram classifier is trained on them
   (recipes/preselect_classifier.py) and scores the whole pool.
4. `select_top`: keep the highest-scoring documents up to a fraction of the pool's bytes (the paper keeps
   the top 10% of characters, its threshold set from cumulative length) or of its documents.

The benchmark ranking comes from numbers given per run, or is computed here: a registered task's metric
(`pretrainlab.eval.tasks`) or bits per byte on held-out documents of a target domain (`benchmark_*`).
`pretrainlab preselect score|train|select` (recipes/preselect_cli.py) runs the steps from the command line;
the `preselect` prepare filter (recipes/preselect_filter.py) applies a trained classifier inside `prepare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import ConfigError, DataError
from pretrainlab.recipes.preselect_docs import Doc

LN2 = math.log(2.0)
BATCH_TOKENS = 16_384  # rows x padded length per forward when scoring documents


@dataclass(frozen=True)
class Benchmark:
    """Each reference run's benchmark figure, which direction is better, and where it came from."""

    values: np.ndarray  # (M,) one figure per run, in run order
    higher_is_better: bool
    source: str  # e.g. "given", "bpb on 412 documents of wiki", "task lambada acc"

    @property
    def quality(self) -> np.ndarray:
        """The figures oriented so that larger is better."""
        return self.values if self.higher_is_better else -self.values


# ------------------------------------------------------------------------------------------ losses


def document_bpb(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    device: Any = "cpu",
    autocast_dtype: Any = None,
    batch_tokens: int = BATCH_TOKENS,
) -> np.ndarray:
    """Bits per UTF-8 byte of each text under `model` (float64; NaN for a text of no tokens).

    Disjoint windows of the model's context length, the first predicted from the tokenizer's end-of-text
    (documents follow one in training), later ones from the token before them; every text's windows go
    through one batched `score_continuations` call, rows grouped by length.
    """
    from pretrainlab.eval.likelihood import score_continuations
    from pretrainlab.train.distributed import unwrap_model

    window = int(unwrap_model(model).cfg.max_seq_len)
    eot = int(tokenizer.eot_id)
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    owner: list[int] = []
    for i, ids in enumerate(tokenizer.encode_batch(list(texts))):
        seq = [eot, *ids.tolist()]
        for s in range(0, len(seq) - 1, window):
            pairs.append(((seq[s],), tuple(seq[s + 1 : s + 1 + window])))
            owner.append(i)
    nats = np.zeros(len(texts))
    if pairs:
        scores = score_continuations(model, pairs, device=device, autocast_dtype=autocast_dtype,
                                     batch_tokens=batch_tokens, share_contexts=False)
        np.add.at(nats, np.asarray(owner), [-s.logprob for s in scores])
    sizes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
    scored = np.zeros(len(texts), dtype=bool)
    scored[np.asarray(owner, dtype=np.int64)] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scored & (sizes > 0), nats / LN2 / sizes, np.nan)


def run_label(runs: Sequence[str | Path]) -> list[str]:
    """A short name per run folder: its folder name, or the path as given where two names collide."""
    names = [Path(r).name for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs)]


def reference_bpb(
    runs: Sequence[str | Path], docs: Sequence[Doc], *, device: Any = "cpu", say: Any = None
) -> np.ndarray:
    """(runs, documents) bits per byte: each run loaded in turn (its newest checkpoint, its own tokenizer)."""
    from pretrainlab.eval.entry import eval_autocast_dtype
    from pretrainlab.eval.load import load_run

    texts = [d.text for d in docs]
    out = np.zeros((len(runs), len(docs)))
    for m, run in enumerate(runs):
        model, cfg, prepared, ckpt = load_run(run, device=device)
        out[m] = document_bpb(model, prepared.tokenizer, texts, device=device,
                              autocast_dtype=eval_autocast_dtype(cfg, model_device(model)))
        if say is not None:
            say(f"{run} @ {ckpt.name}: mean {np.nanmean(out[m]):.4f} bits/byte over {len(docs)} documents")
        del model
    return out


def model_device(model: Any) -> Any:
    return next(model.parameters()).device


# -------------------------------------------------------------------------------------- benchmarks


def benchmark_given(runs: Sequence[str | Path], given: dict[str, float], *, higher_is_better: bool) -> Benchmark:
    """Figures given per run (`--scores NAME=VALUE`), NAME being a run's folder name or its path as given."""
    names = run_label(runs)
    values = []
    used: set[str] = set()
    for name, run in zip(names, runs):
        key = next((k for k in (name, str(run), Path(run).name) if k in given), None)
        if key is None:
            raise ConfigError(f"--scores has no figure for run {str(run)!r}",
                              hint=f"add {name}=VALUE (one per run: {', '.join(names)})")
        used.add(key)
        values.append(float(given[key]))
    extra = sorted(set(given) - used)
    if extra:
        raise ConfigError(f"--scores names {extra[0]!r}, which is not one of the runs ({', '.join(names)})",
                          hint="name each run by its folder name")
    return Benchmark(np.array(values), higher_is_better, "given")


def benchmark_target_bpb(runs: Sequence[str | Path], target: Sequence[Doc], *, device: Any = "cpu") -> Benchmark:
    """Each run's bits per byte over all of `target` (summed bits / summed bytes): lower is better."""
    bpb = reference_bpb(runs, target, device=device)
    sizes = np.array([d.n_bytes for d in target], dtype=np.float64)
    ok = np.isfinite(bpb).all(axis=0)
    totals = (bpb[:, ok] * sizes[ok]).sum(axis=1) / sizes[ok].sum()
    return Benchmark(totals, False, f"bits per byte on {int(ok.sum())} target documents")


def benchmark_task(runs: Sequence[str | Path], task: str, metric: str | None, *, device: Any = "cpu",
                   limit: int | None = None) -> Benchmark:
    """Each run's score on one task spec (NAME, NAME=PATH or PATH, as `pretrainlab eval --tasks`); `metric`
    defaults to acc when the task has it, else bpb. Accuracies are better higher, losses lower."""
    from pretrainlab.eval.entry import eval_autocast_dtype
    from pretrainlab.eval.load import load_run
    from pretrainlab.eval.tasks.cli import load_run_tasks
    from pretrainlab.eval.tasks.evaluate import score_tasks
    from pretrainlab.eval.tasks.registry import parse_task_args, resolve_tasks
    from pretrainlab.eval.tasks.scorers import Engine

    specs = resolve_tasks(parse_task_args([task]))
    values, chosen = [], metric
    for run in runs:
        loaded = load_run_tasks(run, specs, limit=limit)
        model, cfg, prepared, _ = load_run(run, device=device)
        engine = Engine(model, prepared.eot_id, model_device(model), eval_autocast_dtype(cfg, model_device(model)))
        res = score_tasks(loaded, engine)
        by_metric = {k.rsplit("/", 1)[1]: v for k, v in res.items()}
        if chosen is None:
            chosen = "acc" if "acc" in by_metric else "bpb" if "bpb" in by_metric else None
        if chosen not in by_metric:
            raise ConfigError(f"task {specs[0].name!r} has no metric {chosen!r} (it gives "
                              f"{', '.join(k for k in by_metric if k != 'n')})", hint="pick one with --task-metric")
        values.append(float(by_metric[chosen]))
        del model
    assert chosen is not None
    higher = chosen.startswith("acc")
    return Benchmark(np.array(values), higher, f"task {specs[0].name} {chosen}")


# --------------------------------------------------------------------------------- predictive strength


def predictive_strength(bpb: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, int]:
    """(S per document, pairs counted): S is the fraction of run pairs with different `quality` (larger is
    better) whose bits per byte on the document order them the same way, the better run strictly lower.
    A document any run could not score gets NaN."""
    bpb = np.asarray(bpb, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    if bpb.ndim != 2 or bpb.shape[0] != quality.size:
        raise ValueError(f"bpb must be (runs, documents) with one row per quality figure, got {bpb.shape}")
    if not np.all(np.isfinite(quality)):
        raise DataError("a reference run's benchmark figure is not finite", hint="check the runs' scores")
    concordant = np.zeros(bpb.shape[1])
    pairs = 0
    for i in range(len(quality)):
        for j in range(i + 1, len(quality)):
            if quality[i] == quality[j]:
                continue
            better, worse = (i, j) if quality[i] > quality[j] else (j, i)
            concordant += bpb[better] < bpb[worse]
            pairs += 1
    if pairs == 0:
        raise DataError(f"the {len(quality)} reference runs have no two different benchmark figures, so no "
                        "pair ranks them", hint="use at least two runs whose benchmark figures differ")
    strength = concordant / pairs
    strength[~np.isfinite(bpb).all(axis=0)] = np.nan
    return strength, pairs


def label_documents(
    strength: np.ndarray, *, positive_strength: float = 1.0, max_per_class: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) document indices, sorted, as many of each: positives have strength >=
    `positive_strength` (the paper: 1, every pair in order), negatives are the lowest-strength others (ties
    in a seeded random order); at most `max_per_class` of each (positives then a seeded sample)."""
    s = np.asarray(strength, dtype=np.float64)
    finite = np.isfinite(s)
    pos = np.flatnonzero(finite & (s >= positive_strength - 1e-12))
    rest = np.flatnonzero(finite & (s < positive_strength - 1e-12))
    top = float(np.nanmax(s)) if finite.any() else math.nan
    if pos.size == 0:
        raise DataError(f"no document has predictive strength >= {positive_strength:g} (the highest is {top:.3f}, "
                        f"{int(finite.sum())} documents scored)",
                        hint="score more documents, add reference runs whose ranking the data can predict, or "
                        f"lower --positive-strength (e.g. {top:.2f})")
    if rest.size == 0:
        raise DataError(f"every scored document has strength >= {positive_strength:g}: no negatives to learn from",
                        hint="score more varied documents or raise --positive-strength")
    rng = np.random.default_rng(seed)
    pos = rng.permutation(pos)
    rest = rng.permutation(rest)
    rest = rest[np.argsort(s[rest], kind="stable")]
    n = min(pos.size, rest.size, max_per_class if max_per_class is not None else pos.size)
    return np.sort(pos[:n]), np.sort(rest[:n])


# ---------------------------------------------------------------------------------------- selection


def select_top(scores: np.ndarray, sizes: np.ndarray, keep_fraction: float, *, by: str = "bytes") -> np.ndarray:
    """Boolean mask of the highest-scoring documents (ties: earlier first) holding `keep_fraction` of the
    bytes (the document that crosses the fraction is kept) or of the documents (rounded, at least one)."""
    scores, sizes = np.asarray(scores, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return _first(order, sizes, keep_fraction, by)


def select_random(sizes: np.ndarray, keep_fraction: float, *, by: str = "bytes", seed: int = 0) -> np.ndarray:
    """A seeded random selection of the same size rule as `select_top`: the baseline PreSelect must beat."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return _first(np.random.default_rng(seed).permutation(sizes.size), sizes, keep_fraction, by)


def _first(order: np.ndarray, sizes: np.ndarray, keep_fraction: float, by: str) -> np.ndarray:
    if not 0 < keep_fraction <= 1:
        raise ConfigError(f"keep fraction must be in (0, 1] (got {keep_fraction})")
    if by not in ("bytes", "documents"):
        raise ConfigError(f"--by must be bytes or documents (got {by!r})")
    if by == "documents":
        k = max(1, round(keep_fraction * sizes.size))
    else:
        cum = np.cumsum(sizes[order])
        k = min(sizes.size, int(np.searchsorted(cum, keep_fraction * cum[-1], side="left")) + 1)
    mask = np.zeros(sizes.size, dtype=bool)
    mask[order[:k]] = True
    return mask


def selection_summary(docs: Sequence[Doc], scores: np.ndarray, keep: np.ndarray, rule: str) -> dict[str, Any]:
    """Documents and bytes kept by a selection (`keep`), overall and per source, and the lowest kept score."""
    sizes = [d.n_bytes for d in docs]
    by_source: dict[str, dict[str, int]] = {}
    for d, k in zip(docs, keep):
        row = by_source.setdefault(d.source, {"documents": 0, "kept": 0, "bytes": 0, "kept_bytes": 0})
        row["documents"] += 1
        row["bytes"] += d.n_bytes
        row["kept"] += int(bool(k))
        row["kept_bytes"] += d.n_bytes if k else 0
    kept_scores = [float(s) for s, k in zip(scores, keep) if k]
    return {"rule": rule, "documents": len(docs), "bytes": int(sum(sizes)), "kept_documents": int(sum(map(bool, keep))),
            "kept_bytes": int(sum(n for n, k in zip(sizes, keep) if k)),
            "lowest_kept_score": min(kept_scores) if kept_scores else None, "by_source": by_source}


def train_on_strength(
    texts: Sequence[str],
    sizes: Sequence[int],
    strength: np.ndarray,
    *,
    features: Any = None,
    positive_strength: float = 1.0,
    max_per_class: int | None = None,
    c: float = 1.0,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> tuple[Any, str]:
    """The classifier of step 3: label by strength (`label_documents`), measure held-out accuracy on a seeded
    20% of the labelled documents with a classifier fit on the rest, then fit on every labelled document;
    the score quantiles come from all `texts`. Returns (PreselectClassifier, a one-line report)."""
    from pretrainlab.recipes.preselect_classifier import train_classifier

    pos, neg = label_documents(strength, positive_strength=positive_strength, max_per_class=max_per_class, seed=seed)
    rng = np.random.default_rng(seed)
    held_pos, held_neg = (rng.permutation(ix)[: len(ix) // 5] for ix in (pos, neg))
    held_acc = float("nan")
    if len(held_pos) and len(held_neg):
        fit_pos = np.setdiff1d(pos, held_pos)
        fit_neg = np.setdiff1d(neg, held_neg)
        probe = train_classifier([texts[i] for i in fit_pos], [texts[i] for i in fit_neg],
                                 [texts[i] for i in np.r_[fit_pos, fit_neg]], features=features, c=c)
        p = probe.scores([texts[i] for i in np.r_[held_pos, held_neg]])
        held_acc = float(np.mean((p >= 0.5) == np.r_[np.ones(len(held_pos)), np.zeros(len(held_neg))].astype(bool)))
    clf = train_classifier([texts[i] for i in pos], [texts[i] for i in neg], texts, sizes, features=features, c=c,
                           info={**(info or {}), "positive_strength": positive_strength, "seed": seed,
                                 "held_out_accuracy": held_acc, "held_out": int(len(held_pos) + len(held_neg))})
    report = (f"{len(pos)} positives (strength >= {positive_strength:g}) vs {len(neg)} negatives (strength "
              f"{np.nanmin(strength[neg]):.3f}..{np.nanmax(strength[neg]):.3f}) of {len(texts)} documents; "
              f"training accuracy {clf.info['train_accuracy']:.3f}, held-out accuracy {held_acc:.3f} "
              f"({len(held_pos) + len(held_neg)} documents); {clf.info['nonzero_weights']:,} non-zero weights")
    return clf, report


__all__ = ["Benchmark", "benchmark_given", "benchmark_target_bpb", "benchmark_task", "document_bpb",
           "label_documents", "predictive_strength", "reference_bpb", "run_label", "select_random", "select_top",
           "selection_summary", "train_on_strength"]
