"""Cluster a prepared folder's documents by topic into a new prepared folder whose domains are the clusters.

CLIMB (Diao et al. 2025, arXiv 2504.13161) replaces a corpus' source labels by semantic clusters before it
searches a mixture: embed every document, k-means with K_init clusters, then merge clusters whose centroids
are close into super-clusters (the paper: 1000 -> 240 after a quality filter -> about 20). This module does
that on a prepared folder and writes the result as another prepared folder, so everything downstream (the
loader's `data.weights`, sweeps, evaluation per domain) works on clusters unchanged:

    <out>/cluster00 ... clusterNN   training documents of each (super-)cluster, largest first; their
                                    validation documents are the source's, assigned by the same model
    <out>/<domain>[, <domain>_test] validation-only domains: the held-out documents of `eval_domains`
                                    (0 training tokens, so the loader gives them weight 0), e.g. the target
                                    a mixture search minimises; with `test_fraction` a seeded part of them
                                    goes to `<domain>_test`, text the search never scores

The manifest records the recipe (`config.cluster`) and, per cluster, its size, its most distinctive TF-IDF
terms and its composition by source domain (`clusters`). Same source, options and seed give the same
assignment and the same folder fingerprint. The quality-based cluster pruning of the paper is left out
(it needs the paper's LLM-annotated quality classifiers); `pretrainlab prepare`'s filters play that role.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.prepared import MANIFEST_FORMAT, PreparedData, fingerprint_of
from pretrainlab.data.shards import ShardWriter
from pretrainlab.errors import ConfigError, DataError

N_INIT = 3  # k-means restarts (fixed: part of what makes a seed's clustering reproducible)
TOP_TERMS = 8


@dataclass
class _Doc:
    """One document (or piece of one) of the source: where it came from, its tokens (no end-of-text) and text."""

    domain: int
    tokens: np.ndarray
    n_bytes: int
    text: str


def cluster_prepared(
    source: str | Path,
    out: str | Path,
    *,
    k: int,
    embedder: str = "tfidf",
    dim: int | None = None,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    merge_distance: float | None = None,
    merge_to: int | None = None,
    eval_domains: Sequence[str] = (),
    test_fraction: float = 0.0,
    max_doc_tokens: int | None = None,
    say: Callable[[str], None] | None = None,
) -> PreparedData:
    """Cluster the training documents of `domains` (default all) of the prepared folder `source` into `k`
    k-means clusters and write them as domains `cluster00..` of a new prepared folder `out`.

    `embedder`/`dim`: see data/embed.py. `merge_to` merges the k clusters into that many super-clusters, or
    `merge_distance` merges clusters until the next merge would join groups farther apart (Ward linkage over
    the centroids: for two single centroids their euclidean distance, 0..2 for normalised embeddings); at
    most one of the two.
    `eval_domains` keep their validation documents as validation-only domains (see the module docstring);
    `max_doc_tokens` cuts longer documents into pieces first (a book is not one point). Reuses `out` when it
    already holds this exact clustering; other content there is an error.
    """
    say = say or (lambda _: None)
    if test_fraction and not eval_domains:
        raise ConfigError(f"test_fraction={test_fraction} splits the eval domains, but none are named",
                          hint="name them (--eval-domains D...), or leave test_fraction at 0")
    if dim is not None and dim < 1:
        raise ConfigError(f"dim={dim}: the embedding needs at least 1 dimension", hint="leave it unset (64) or give >= 1")
    src = PreparedData(source)
    pool = list(domains) if domains else src.domains
    eval_domains = list(eval_domains)
    recipe = _recipe(src, pool, eval_domains, k=k, embedder=embedder, dim=dim, seed=seed,
                     merge_distance=merge_distance, merge_to=merge_to, test_fraction=test_fraction,
                     max_doc_tokens=max_doc_tokens)
    out = Path(out)
    existing = _existing(out, recipe)
    if existing is not None:
        say(f"{out} already holds this clustering (fingerprint {existing.fingerprint[:16]})")
        return existing

    from sklearn.cluster import KMeans

    from pretrainlab.data.embed import make_embedder

    train = _documents(src, pool, "train", max_doc_tokens)
    if len(train) < k:
        raise ConfigError(f"k={k} clusters but only {len(train)} training documents in {', '.join(pool)}",
                          hint="lower k (or cut long documents into pieces with max_doc_tokens)")
    say(f"embedding {len(train):,} training documents ({embedder})")
    model = make_embedder(embedder, dim=dim, seed=seed)
    texts = [d.text for d in train]
    x = model.fit(texts).transform(texts)
    say(f"k-means: {k} clusters on {x.shape[1]}-dimensional embeddings")
    kmeans = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(x)
    fine = kmeans.labels_.astype(np.int64)
    merged = _merge(kmeans.cluster_centers_, merge_to=merge_to, merge_distance=merge_distance)
    labels = _rank_by_tokens(merged[fine], [d.tokens.size for d in train])
    n_clusters = int(labels.max()) + 1
    names = [f"cluster{i:0{max(2, len(str(n_clusters - 1)))}d}" for i in range(n_clusters)]
    clash = sorted(set(names) & set(_eval_names(eval_domains, test_fraction)))
    if clash:
        raise ConfigError(f"eval domain {clash[0]!r} has the name of a cluster", hint="rename that domain")

    val = _documents(src, pool, "val", max_doc_tokens)
    val_labels = _assign(model.transform([d.text for d in val]), kmeans.cluster_centers_, fine, labels)
    say(f"assigned {len(val):,} validation documents; {n_clusters} clusters from k={k}")
    info = _describe(train, labels, names, pool, texts, model, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = {}
        for c, name in enumerate(names):
            entries[name] = _write_domain(tmp, name, src, [d for d, lab in zip(train, labels) if lab == c],
                                          [d for d, lab in zip(val, val_labels) if lab == c])
        for name, docs in _eval_splits(src, eval_domains, test_fraction, seed).items():
            entries[name] = _write_domain(tmp, name, src, [], docs)
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "tokenizer": dict(src.manifest["tokenizer"]),
            "dtype": src.dtype.name,
            "domains": entries,
            "clusters": info,
            "config": {"cluster": recipe, "source_config": src.manifest.get("config", {})},
        }
        manifest["fingerprint"] = fingerprint_of(manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if (src.path / "tokenizer.json").is_file():
            shutil.copy2(src.path / "tokenizer.json", tmp / "tokenizer.json")
        if out.exists():
            shutil.rmtree(out)  # only an incomplete folder gets here (_existing refused any other content)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(out)


def cluster_rows(data: PreparedData) -> list[dict[str, Any]]:
    """One row per cluster of a clustered folder: name, documents, tokens, share of tokens, top terms and the
    source domains by share of the cluster's tokens (for the summary `pretrainlab cluster` prints)."""
    info = data.manifest.get("clusters")
    if not isinstance(info, dict):
        raise DataError(f"{data.path} is not a clustered folder (its manifest has no 'clusters')",
                        hint="make one with `pretrainlab cluster SOURCE --out OUT --k K`")
    total = sum(int(c["tokens"]) for c in info.values()) or 1
    rows = []
    for name, c in info.items():
        tokens = int(c["tokens"])
        comp = {d: n / tokens for d, n in sorted(c["composition"].items(), key=lambda kv: -kv[1]) if n} if tokens \
            else {}
        rows.append({"cluster": name, "documents": int(c["documents"]), "tokens": tokens, "share": tokens / total,
                     "top_terms": list(c["top_terms"]), "composition": comp})
    return rows


def cluster_domains(data: PreparedData) -> list[str]:
    """The cluster domains of a clustered folder (those with training tokens), in manifest order."""
    info = data.manifest.get("clusters")
    if not isinstance(info, dict):
        raise DataError(f"{data.path} is not a clustered folder (its manifest has no 'clusters')",
                        hint="make one with `pretrainlab cluster SOURCE --out OUT --k K`")
    return [d for d in info if int(info[d]["tokens"]) > 0]


# ------------------------------------------------------------------------------------------- steps


def _recipe(src: PreparedData, pool: list[str], eval_domains: list[str], **options: Any) -> dict[str, Any]:
    for field, names in (("domains", pool), ("eval_domains", eval_domains)):
        missing = [d for d in names if d not in src.domains]
        if missing:
            raise DataError(f"{field}: domain {missing[0]!r} is not in {src.path}", hint=f"it has: {', '.join(src.domains)}")
    if len(set(eval_domains)) != len(eval_domains):
        raise ConfigError("eval_domains names a domain twice")
    if options["k"] < 1:
        raise ConfigError(f"k={options['k']}: needs at least one cluster")
    if options["merge_to"] is not None and options["merge_distance"] is not None:
        raise ConfigError("give merge_to or merge_distance, not both")
    if options["merge_to"] is not None and not 1 <= options["merge_to"] <= options["k"]:
        raise ConfigError(f"merge_to={options['merge_to']}: must lie in 1..k ({options['k']})")
    if options["merge_distance"] is not None and not options["merge_distance"] > 0:
        raise ConfigError(f"merge_distance={options['merge_distance']}: must be > 0")
    if not 0.0 <= options["test_fraction"] < 1.0:
        raise ConfigError(f"test_fraction={options['test_fraction']}: must lie in [0, 1)")
    if options["max_doc_tokens"] is not None and options["max_doc_tokens"] < 2:
        raise ConfigError(f"max_doc_tokens={options['max_doc_tokens']}: must be >= 2")
    empty = [d for d in eval_domains if src.shard(d, "val").n_docs == 0]
    if empty:
        raise DataError(f"eval domain {empty[0]!r} of {src.path} has no validation documents",
                        hint="prepare the source with validation.fraction > 0 (or validation.files)")
    return {"source": src.fingerprint, "domains": pool, "eval_domains": eval_domains, "n_init": N_INIT, **options}


def _existing(out: Path, recipe: dict[str, Any]) -> PreparedData | None:
    if not out.exists():
        return None
    if not (out / "manifest.json").is_file():
        if out.is_dir() and not any(out.iterdir()):
            return None
        raise DataError(f"{out} exists and is not a prepared folder", hint="pick another --out or delete it")
    try:
        data = PreparedData(out)
        if data.manifest.get("config", {}).get("cluster") == recipe:
            return data
    except DataError:
        pass
    raise DataError(f"{out} already holds other data (not this clustering)", hint="pick another --out or delete it")


def _documents(src: PreparedData, pool: list[str], split: str, max_doc_tokens: int | None) -> list[_Doc]:
    """Every document of `pool`'s `split` shards in domain then document order, cut into pieces of at most
    `max_doc_tokens`, with its text (decoded once, for the embedding) and UTF-8 byte count."""
    tok = src.tokenizer
    bytes_kind = src.manifest["tokenizer"].get("kind") == "bytes"
    docs: list[_Doc] = []
    for d_index, domain in enumerate(pool):
        shard = src.shard(domain, split)
        offsets = np.asarray(shard.offsets)
        for i in range(shard.n_docs):
            tokens = np.asarray(shard.tokens[offsets[i] : offsets[i + 1]])
            if tokens.size and int(tokens[-1]) == src.eot_id:
                tokens = tokens[:-1]
            if tokens.size == 0:
                continue
            step = max_doc_tokens or tokens.size
            whole = tokens.size <= step
            for start in range(0, tokens.size, step):
                piece = tokens[start : start + step]
                text = tok.decode(piece)
                n_bytes = int(shard.doc_bytes[i]) if whole else (
                    int(np.count_nonzero(piece < 256)) if bytes_kind else len(text.encode("utf-8")))
                docs.append(_Doc(domain=d_index, tokens=piece, n_bytes=n_bytes, text=text))
    return docs


def _merge(centroids: np.ndarray, *, merge_to: int | None, merge_distance: float | None) -> np.ndarray:
    """Super-cluster of each k-means cluster: Ward agglomeration of the centroids (average or complete linkage
    leave one giant cluster and a few outliers on text embeddings; Ward's merge cost keeps them balanced)."""
    k = centroids.shape[0]
    if (merge_to is None and merge_distance is None) or k == 1 or merge_to == k:
        return np.arange(k, dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering

    agg = AgglomerativeClustering(n_clusters=merge_to, distance_threshold=merge_distance, linkage="ward",
                                  metric="euclidean", compute_full_tree=True)
    return agg.fit_predict(centroids).astype(np.int64)


def _rank_by_tokens(labels: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Relabel 0..n-1 so cluster 0 has the most training tokens (ties: the smaller original label first);
    labels no document has (k-means on duplicate points can leave a cluster empty) are dropped."""
    present, inverse = np.unique(labels, return_inverse=True)
    tokens = np.bincount(inverse, weights=np.asarray(sizes, dtype=np.float64), minlength=present.size)
    order = sorted(range(present.size), key=lambda c: (-tokens[c], c))
    new = np.empty(present.size, dtype=np.int64)
    new[order] = np.arange(present.size)
    return new[inverse]


def _assign(x: np.ndarray, centers: np.ndarray, fine: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Final cluster of each embedded row `x`: that of the nearest k-means centre holding training documents
    (`fine`: each training document's k-means cluster, `labels`: its final cluster)."""
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    populated = np.unique(fine)
    final_of = np.zeros(centers.shape[0], dtype=np.int64)
    final_of[fine] = labels
    from sklearn.metrics import pairwise_distances_argmin

    return final_of[populated[pairwise_distances_argmin(x, centers[populated])]]


def _describe(train: list[_Doc], labels: np.ndarray, names: list[str], pool: list[str], texts: list[str],
              model: Any, seed: int) -> dict[str, Any]:
    """Per cluster: documents, tokens, top TF-IDF terms (highest mean weight in the cluster above the corpus
    mean) and training tokens per source domain."""
    from pretrainlab.data.embed import TfidfSvdEmbedder

    vectorizer = model.vectorizer if isinstance(model, TfidfSvdEmbedder) else TfidfSvdEmbedder(seed=seed).fit(texts).vectorizer
    matrix = vectorizer.transform([t[:20_000] for t in texts])
    vocab = vectorizer.get_feature_names_out()
    overall = np.asarray(matrix.mean(axis=0)).ravel()
    info: dict[str, Any] = {}
    for c, name in enumerate(names):
        rows = np.flatnonzero(labels == c)
        lift = np.asarray(matrix[rows].mean(axis=0)).ravel() - overall
        top = [str(vocab[i]) for i in np.argsort(-lift, kind="stable")[:TOP_TERMS] if lift[i] > 0]
        comp = {d: 0 for d in pool}
        for i in rows:
            comp[pool[train[i].domain]] += int(train[i].tokens.size) + 1
        info[name] = {"documents": int(rows.size), "tokens": int(sum(comp.values())), "top_terms": top,
                      "composition": comp}
    return info


def _eval_names(eval_domains: list[str], test_fraction: float) -> list[str]:
    return [n for d in eval_domains for n in ([d, f"{d}_test"] if test_fraction > 0 else [d])]


def _eval_splits(src: PreparedData, eval_domains: list[str], test_fraction: float, seed: int) -> dict[str, list[_Doc]]:
    """Each eval domain's validation documents (whole), a seeded `test_fraction` of them under `<d>_test`."""
    out: dict[str, list[_Doc]] = {}
    for d_index, domain in enumerate(eval_domains):
        docs = _documents(src, [domain], "val", None)
        if test_fraction <= 0:
            out[domain] = docs
            continue
        rng = np.random.default_rng([seed, d_index, 0x7E57])
        n_test = min(len(docs) - 1, max(1, round(test_fraction * len(docs)))) if len(docs) > 1 else 0
        test = set(rng.permutation(len(docs))[:n_test].tolist())
        out[domain] = [doc for i, doc in enumerate(docs) if i not in test]
        out[f"{domain}_test"] = [doc for i, doc in enumerate(docs) if i in test]
    return out


def _write_domain(root: Path, name: str, src: PreparedData, train: list[_Doc], val: list[_Doc]) -> dict[str, Any]:
    entry: dict[str, Any] = {"skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0, "sources": []}
    for split, docs in (("train", train), ("val", val)):
        with ShardWriter(root, name, split, src.dtype) as w:
            if docs:
                tokens = np.concatenate([np.append(d.tokens, src.eot_id) for d in docs]).astype(np.int64)
                w.write(tokens, np.array([d.tokens.size + 1 for d in docs]), np.array([d.n_bytes for d in docs]))
        entry[split] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
    return entry


__all__ = ["cluster_domains", "cluster_prepared", "cluster_rows"]
