"""PreSelect's fast scorer: a hashed n-gram logistic regression, saved without pickle.

PreSelect (Shum et al. 2025, arXiv 2503.00808) labels documents by predictive strength (recipes/preselect.py)
and trains a fastText classifier, word bigrams, on the positives (every model pair in benchmark order) against
as many of the lowest-strength documents; it then keeps the pool's documents that the classifier scores
highest. Here the classifier is scikit-learn's `HashingVectorizer` (word n-grams, optionally char_wb n-grams
too, hashed into a fixed feature space, so there is no vocabulary to store) and a logistic regression
(liblinear, deterministic). Newlines become spaces before hashing, as the official code does.

Saved as ONE `.npz` read with `allow_pickle=False`: the vectorizer settings and training record as a JSON
string, the non-zero coefficients (indices + values: features never seen in training keep exactly 0), the
intercept, and the quantiles of the classifier's scores over the population it was trained from (every
scored document, weighted by documents and by bytes), which turn "keep the top 10%" into a score threshold
for documents scored one at a time (the `preselect` prepare filter). Written atomically (temporary file,
fsync, rename), so a reader sees the old classifier or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import ConfigError, DataError

FORMAT = "pretrainlab-preselect-classifier/1"
N_QUANTILES = 1001  # the scores at 0.0%, 0.1%, ..., 100% of the population
KEEP_BY = ("documents", "bytes")


@dataclass(frozen=True)
class FeatureSettings:
    """How text becomes features: word n-grams (`word_ngrams` = (lo, hi)), optionally char_wb n-grams, each
    hashed into `n_features` columns (the two blocks side by side), lower-cased, l2-normalised per block."""

    word_ngrams: tuple[int, int] | None = (1, 2)
    char_ngrams: tuple[int, int] | None = None
    n_features: int = 2**18
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ConfigError("the classifier needs word n-grams, char n-grams or both",
                              hint="give word_ngrams (e.g. 1 2) and/or char_ngrams (e.g. 3 5)")
        for name in ("word_ngrams", "char_ngrams"):
            r = getattr(self, name)
            if r is not None and not (len(r) == 2 and 1 <= int(r[0]) <= int(r[1])):
                raise ConfigError(f"{name} must be two integers lo <= hi, lo >= 1 (got {r})")
        if not 2**4 <= self.n_features <= 2**26:
            raise ConfigError(f"n_features must be in [16, 2^26] (got {self.n_features})")

    def as_dict(self) -> dict[str, Any]:
        return {"word_ngrams": list(self.word_ngrams) if self.word_ngrams else None,
                "char_ngrams": list(self.char_ngrams) if self.char_ngrams else None,
                "n_features": self.n_features, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSettings":
        def pair(v: Any) -> tuple[int, int] | None:
            return None if v is None else (int(v[0]), int(v[1]))

        return cls(word_ngrams=pair(d.get("word_ngrams")), char_ngrams=pair(d.get("char_ngrams")),
                   n_features=int(d["n_features"]), lowercase=bool(d["lowercase"]))

    @property
    def width(self) -> int:
        """Total feature columns (one block per analyzer)."""
        return self.n_features * ((self.word_ngrams is not None) + (self.char_ngrams is not None))

    def transform(self, texts: Sequence[str]) -> Any:
        """The sparse (len(texts), width) feature matrix (CSR, float64)."""
        import scipy.sparse as sp

        clean = [t.replace("\r", " ").replace("\n", " ") for t in texts]
        blocks = [vec.transform(clean) for vec in _vectorizers(self)]
        return (blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")).tocsr()


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # HashingVectorizer's default token_pattern
_MIN_INT32 = -(2**31)


def word_features(text: str, features: FeatureSettings) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of one text's word n-gram block, exactly as HashingVectorizer(analyzer="word",
    alternate_sign=False, norm="l2") computes them: default token pattern, n-grams joined by a space, signed
    32-bit MurmurHash3 (seed 0) of each, abs() modulo n_features, counts, l2-normalised."""
    from sklearn.utils import murmurhash3_32

    assert features.word_ngrams is not None
    clean = text.replace("\r", " ").replace("\n", " ")
    tokens = _TOKEN.findall(clean.lower() if features.lowercase else clean)
    lo, hi = features.word_ngrams
    grams = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), hi + 1):
        grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    m = features.n_features
    hashes = np.fromiter((murmurhash3_32(g, seed=0) for g in grams), dtype=np.int64, count=len(grams))
    idx = np.where(hashes == _MIN_INT32, (2**31 - 1 - (m - 1)) % m, np.abs(hashes) % m)
    cols, counts = np.unique(idx, return_counts=True)
    values = counts.astype(np.float64)
    norm = np.sqrt(np.sum(values**2))
    return cols, values / norm if norm > 0 else values


@lru_cache(maxsize=8)
def _vectorizers(settings: FeatureSettings) -> list[Any]:
    """The HashingVectorizers of `settings` (stateless; built once: building one per document costs more
    than hashing it)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return [HashingVectorizer(analyzer=analyzer, ngram_range=ngrams, n_features=settings.n_features,
                              lowercase=settings.lowercase, alternate_sign=False, norm="l2")
            for analyzer, ngrams in (("word", settings.word_ngrams), ("char_wb", settings.char_ngrams))
            if ngrams is not None]


@dataclass
class PreselectClassifier:
    """P(document is predictive) = sigmoid(features . w + b), with w stored sparsely; `quantiles` /
    `byte_quantiles` are the population's score quantiles (N_QUANTILES evenly spaced levels)."""

    features: FeatureSettings
    indices: np.ndarray  # int64, sorted column indices of the non-zero weights
    values: np.ndarray  # float64 weights at `indices`
    intercept: float
    quantiles: np.ndarray  # float64 (N_QUANTILES,): score quantiles over the population's documents
    byte_quantiles: np.ndarray  # float64 (N_QUANTILES,): the same, each document weighted by its bytes
    info: dict[str, Any] = field(default_factory=dict)  # training record (counts, accuracy, options)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """features . w + b of each text (float64)."""
        if not len(texts):
            return np.zeros(0)
        return np.asarray(self.features.transform(texts) @ self._dense, dtype=np.float64).ravel() + self.intercept

    @cached_property
    def _dense(self) -> np.ndarray:
        w = np.zeros(self.features.width)
        w[self.indices] = self.values
        return w

    def score_one(self, text: str) -> float:
        """P(positive) of one text, as `scores([text])[0]` (equal up to float summation order): for word
        n-grams alone, hashed here without building a sparse matrix (7x faster per document; the prepare
        filter scores documents one at a time)."""
        if self.features.char_ngrams is not None:
            return float(self.scores([text])[0])
        idx, val = word_features(text, self.features)
        return float(_sigmoid(np.array([float(self._dense[idx] @ val) + self.intercept]))[0])

    def scores(self, texts: Sequence[str], batch: int = 1024) -> np.ndarray:
        """P(positive) of each text, in [0, 1] (texts hashed `batch` at a time)."""
        out = [_sigmoid(self.logits(texts[i : i + batch])) for i in range(0, len(texts), batch)]
        return np.concatenate(out) if out else np.zeros(0)

    def threshold(self, keep_fraction: float, by: str = "documents") -> float:
        """The score above which `keep_fraction` of the training population lies (by documents or bytes)."""
        if not 0 < keep_fraction <= 1:
            raise ConfigError(f"keep_fraction must be in (0, 1] (got {keep_fraction})")
        if by not in KEEP_BY:
            raise ConfigError(f"by must be one of {', '.join(KEEP_BY)} (got {by!r})")
        q = self.quantiles if by == "documents" else self.byte_quantiles
        levels = np.linspace(0.0, 1.0, q.size)
        return float(np.interp(1.0 - keep_fraction, levels, q))

    # -- saving and loading ------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the classifier to `path` (a `.npz`) atomically; returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ConfigError(f"{path}: a classifier file ends in .npz", hint=f"use {path.with_suffix('.npz')}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "features": self.features.as_dict(), "intercept": self.intercept,
                "info": self.info}
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(
                    f, meta=np.array(json.dumps(meta, allow_nan=False)),
                    indices=self.indices.astype(np.int64), values=self.values.astype(np.float64),
                    quantiles=self.quantiles.astype(np.float64),
                    byte_quantiles=self.byte_quantiles.astype(np.float64))
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PreselectClassifier":
        """Read a classifier written by `save` (never unpickles); DataError naming the file on any problem."""
        path = Path(path)
        hint = "pass a classifier written by `pretrainlab preselect train` (a .npz file)"
        if not path.is_file():
            raise DataError(f"classifier file {str(path)!r} does not exist", hint=hint)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile / numpy raise several kinds for a file that is not an .npz
            # numpy's own text for a non-.npz file suggests allow_pickle=True: never pass that on
            raise DataError(f"{path}: not a PreSelect classifier (not a readable .npz file: {type(e).__name__})",
                            hint=hint) from None
        missing = [k for k in ("meta", "indices", "values", "quantiles", "byte_quantiles") if k not in arrays]
        if missing:
            raise DataError(f"{path}: not a PreSelect classifier (missing {', '.join(missing)})", hint=hint)
        try:
            meta = json.loads(str(arrays["meta"]))
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path}: its metadata is not valid JSON ({e})", hint=hint) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise DataError(f"{path}: unknown classifier format {found!r} (expected {FORMAT!r})", hint=hint)
        try:
            features = FeatureSettings.from_dict(meta["features"])
            intercept = float(meta["intercept"])
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise DataError(f"{path}: bad feature settings or intercept ({e})", hint=hint) from None
        indices, values = arrays["indices"], arrays["values"]
        if indices.dtype != np.int64 or values.dtype != np.float64 or indices.shape != values.shape \
                or indices.ndim != 1:
            raise DataError(f"{path}: indices/values must be int64/float64 vectors of one length", hint=hint)
        if indices.size and (indices.min() < 0 or indices.max() >= features.width or np.any(np.diff(indices) <= 0)):
            raise DataError(f"{path}: coefficient indices out of range or not sorted", hint=hint)
        for key in ("quantiles", "byte_quantiles"):
            q = arrays[key]
            if q.dtype != np.float64 or q.shape != (N_QUANTILES,) or not np.all(np.isfinite(q)) \
                    or np.any(np.diff(q) < 0):
                raise DataError(f"{path}: {key} must be {N_QUANTILES} non-decreasing finite floats", hint=hint)
        if not (np.all(np.isfinite(values)) and np.isfinite(intercept)):
            raise DataError(f"{path}: non-finite weights", hint=hint)
        return cls(features, indices, values, intercept, arrays["quantiles"], arrays["byte_quantiles"],
                   dict(meta.get("info") or {}))


def train_classifier(
    positives: Sequence[str],
    negatives: Sequence[str],
    population: Sequence[str],
    population_bytes: Sequence[int] | None = None,
    *,
    features: FeatureSettings | None = None,
    c: float = 1.0,
    info: dict[str, Any] | None = None,
) -> PreselectClassifier:
    """Fit positives (label 1) against negatives (label 0), then record the score quantiles of `population`
    (the documents the labels came from; `population_bytes` weights the byte quantiles, default UTF-8 sizes)."""
    from sklearn.linear_model import LogisticRegression

    if not positives or not negatives:
        raise DataError(f"the classifier needs positive and negative documents (got {len(positives)} and "
                        f"{len(negatives)})", hint="score more documents, or lower the positive strength")
    if not population:
        raise DataError("no population documents to set the score quantiles from")
    if not c > 0:
        raise ConfigError(f"C must be > 0 (got {c})")
    features = features or FeatureSettings()
    texts = list(positives) + list(negatives)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000)
    with threadpool_limits(limits=1):  # tiny BLAS calls: extra threads only contend (10x slower on a busy machine)
        model.fit(features.transform(texts), y)
    dense = model.coef_.ravel().astype(np.float64)
    nz = np.flatnonzero(dense).astype(np.int64)
    clf = PreselectClassifier(features, nz, dense[nz], float(model.intercept_[0]), np.zeros(N_QUANTILES),
                              np.zeros(N_QUANTILES), {})
    train_acc = float(np.mean((clf.scores(texts) >= 0.5) == (y == 1)))
    pop_scores = clf.scores(list(population))
    sizes = np.asarray(population_bytes if population_bytes is not None
                       else [len(t.encode("utf-8")) for t in population], dtype=np.float64)
    clf.quantiles = np.quantile(pop_scores, np.linspace(0, 1, N_QUANTILES))
    clf.byte_quantiles = weighted_quantiles(pop_scores, sizes, N_QUANTILES)
    clf.info = {"positives": len(positives), "negatives": len(negatives), "population": len(population),
                "train_accuracy": train_acc, "C": c, "nonzero_weights": int(nz.size), **(info or {})}
    return clf


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """`n` evenly spaced quantiles (levels 0..1) of `values` with each value weighted by `weights`: the value
    at which the cumulative weight (sorted ascending, mid-point rule) reaches each level."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, dtype=np.float64)[order], np.asarray(weights, dtype=np.float64)[order]
    if not np.all(w >= 0) or w.sum() <= 0:
        raise DataError("document weights (bytes) must be >= 0 with a positive total")
    cum = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(np.linspace(0, 1, n), cum, v)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact form without overflow warnings for large |z|
