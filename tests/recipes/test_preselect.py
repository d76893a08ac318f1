"""PreSelect's mechanism on planted data: reference "models" whose losses we control (a mixture of a uniform
guess and the true Markov chain of the valuable documents, better models trusting the chain more) rank the
planted chain documents above planted noise; the classifier trained on those labels separates held-out
planted documents; the saved classifier round-trips exactly; bad files, options and labels give clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pretrainlab.config import FilterConfig
from pretrainlab.data.tokenizer import TextTokenizer
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.recipes.preselect import (
    document_bpb,
    label_documents,
    predictive_strength,
    select_random,
    select_top,
    train_on_strength,
)
from pretrainlab.recipes.preselect_classifier import N_QUANTILES, FeatureSettings, PreselectClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

ALPHA = "abcdefghijklmnopqrstuvwxyz "
VOCAB = 258
TABLE = np.random.default_rng(7).permutation(len(ALPHA))  # the planted chain: next letter = TABLE[letter]
QUALITY = (0.2, 0.4, 0.6, 0.8)  # each model's trust in the chain: the benchmark order
CHARS = FeatureSettings(word_ngrams=None, char_ngrams=(2, 3), n_features=2**14)


def chain_text(rng: np.random.Generator, n: int = 120) -> str:
    x = [int(rng.integers(len(ALPHA)))]
    for _ in range(n - 1):
        x.append(int(TABLE[x[-1]]) if rng.random() < 0.9 else int(rng.integers(len(ALPHA))))
    return "".join(ALPHA[i] for i in x)


def noise_text(rng: np.random.Generator, n: int = 120) -> str:
    return "".join(ALPHA[i] for i in rng.integers(len(ALPHA), size=n))


class PlantedLM(nn.Module):
    """Next-byte probabilities (1 - a) x uniform over ALPHA + a x the planted chain: a bigram model exposing
    the decoder's interface (cfg.max_seq_len, forward -> hidden, logits(hidden))."""

    def __init__(self, a: float, window: int = 48) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(max_seq_len=window)
        letters = [ord(c) for c in ALPHA]
        uniform = np.full((VOCAB, VOCAB), 1e-6)
        uniform[:, letters] = 1.0
        uniform /= uniform.sum(1, keepdims=True)
        chain = uniform.copy()
        for i, c in enumerate(ALPHA):
            row = np.full(VOCAB, 1e-6)
            row[letters] = 0.1 / len(ALPHA)
            row[ord(ALPHA[TABLE[i]])] += 0.9
            chain[ord(c)] = row / row.sum()
        self.register_buffer("table", torch.tensor(np.log((1 - a) * uniform + a * chain), dtype=torch.float32))
        self.unused = nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, x: torch.Tensor, cache: object = None) -> torch.Tensor:
        return torch.nn.functional.one_hot(x, VOCAB).float()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.table


@pytest.fixture(scope="module")
def planted() -> SimpleNamespace:
    """50 chain and 50 noise documents, each planted model's bits per byte on them, and the benchmark
    computed as the models' bits per byte on 10 held-out chain documents (lower is better)."""
    rng = np.random.default_rng(0)
    docs = [chain_text(rng) for _ in range(50)] + [noise_text(rng) for _ in range(50)]
    target = [chain_text(rng) for _ in range(10)]
    tok = TextTokenizer.bytes()
    models = [PlantedLM(a) for a in QUALITY]
    bpb = np.stack([document_bpb(m, tok, docs) for m in models])
    bench = np.array([np.mean(document_bpb(m, tok, target)) for m in models])
    return SimpleNamespace(docs=docs, bpb=bpb, bench=bench, is_chain=np.arange(100) < 50, tok=tok, models=models)


def test_document_bpb_matches_a_direct_computation_and_is_batch_independent(planted: SimpleNamespace) -> None:
    model, text = planted.models[1], planted.docs[0]
    ids = [256] + list(text.encode())
    logp = torch.log_softmax(model.table[ids[:-1]], dim=-1)[torch.arange(len(ids) - 1), ids[1:]]
    direct = -float(logp.double().sum()) / np.log(2) / len(text)
    # windows of 48 restart from the token before them, which a bigram model sees anyway: same figure
    assert document_bpb(model, planted.tok, [text])[0] == pytest.approx(direct, rel=1e-6)
    small = document_bpb(model, planted.tok, planted.docs[:7], batch_tokens=64)
    assert np.array_equal(small, planted.bpb[1, :7])  # batching does not change a document's score


def test_planted_valuable_documents_outrank_noise(planted: SimpleNamespace) -> None:
    assert list(np.argsort(planted.bench)) == [3, 2, 1, 0]  # computed ranking: more trust in the chain is better
    strength, pairs = predictive_strength(planted.bpb, -planted.bench)
    assert pairs == 6
    assert np.all(strength[planted.is_chain] == 1.0)  # every pair in benchmark order
    assert np.all(strength[~planted.is_chain] == 0.0)  # noise: better models are worse on it
    pos, neg = label_documents(strength)
    assert set(pos) == set(range(50)) and set(neg) == set(range(50, 100))


def test_strength_counts_strictly_concordant_pairs_and_skips_tied_benchmarks() -> None:
    bpb = np.array([[1.0, 2.0, 1.0, np.nan], [2.0, 1.0, 1.0, 1.0], [3.0, 3.0, 1.0, 1.0]])
    s, pairs = predictive_strength(bpb, np.array([3.0, 2.0, 2.0]))  # runs 1 and 2 tie: 2 pairs count
    assert pairs == 2
    assert s[0] == 1.0 and s[1] == 0.5 and s[2] == 0.0  # equal losses are not in order
    assert np.isnan(s[3])
    with pytest.raises(DataError, match="no two different benchmark figures"):
        predictive_strength(bpb, np.array([1.0, 1.0, 1.0]))


def test_labels_are_balanced_lowest_first_and_errors_say_what_to_do() -> None:
    s = np.array([1.0, 0.5, 1.0, 0.0, 0.5, 1.0, np.nan, 0.2])
    pos, neg = label_documents(s)
    assert list(pos) == [0, 2, 5] and list(neg) == [3, 4, 7] or list(neg) == [1, 3, 7]
    assert len(label_documents(s, max_per_class=2)[0]) == 2
    assert label_documents(s, seed=3)[1].tolist() == label_documents(s, seed=3)[1].tolist()
    with pytest.raises(DataError, match="lower --positive-strength"):
        label_documents(np.array([0.5, 0.2]))
    with pytest.raises(DataError, match="no negatives"):
        label_documents(np.array([1.0, 1.0]))


def test_classifier_separates_held_out_planted_documents_and_round_trips(planted: SimpleNamespace,
                                                                        tmp_path: Path) -> None:
    strength, _ = predictive_strength(planted.bpb, -planted.bench)
    sizes = [len(t) for t in planted.docs]
    clf, report = train_on_strength(planted.docs, sizes, strength, features=CHARS)
    assert "50 positives" in report and clf.info["held_out_accuracy"] == 1.0
    rng = np.random.default_rng(99)
    fresh_chain = [chain_text(rng) for _ in range(30)]
    fresh_noise = [noise_text(rng) for _ in range(30)]
    assert clf.scores(fresh_chain).min() > clf.scores(fresh_noise).max()

    path = clf.save(tmp_path / "clf.npz")
    back = PreselectClassifier.load(path)
    assert back.features == clf.features and back.intercept == clf.intercept and back.info == json.loads(
        json.dumps(clf.info))
    for key in ("indices", "values", "quantiles", "byte_quantiles"):
        assert np.array_equal(getattr(back, key), getattr(clf, key))
    assert np.array_equal(back.scores(fresh_chain + fresh_noise), clf.scores(fresh_chain + fresh_noise))
    assert back.threshold(0.5) == clf.threshold(0.5)
    # half the population (the chain half) lies above the median threshold
    assert np.mean(clf.scores(planted.docs) >= clf.threshold(0.5)) == pytest.approx(0.5, abs=0.02)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_one_document_path_hashes_exactly_as_hashing_vectorizer(planted: SimpleNamespace) -> None:
    from pretrainlab.recipes.preselect_classifier import word_features

    texts = ["The Cat sat.\nOn the mat, the cat sat!", "Ünïcode wörds: naïve café, ÉCOLE école", "a b c", "",
             "def f(x):\n    return x_1 + x_2  # 42 apples", *planted.docs[:5]]
    for settings in (FeatureSettings(), FeatureSettings(word_ngrams=(1, 3), n_features=2**10, lowercase=False),
                     FeatureSettings(word_ngrams=(2, 2), n_features=2**4)):
        matrix = settings.transform(texts).toarray()
        for row, text in zip(matrix, texts):
            idx, val = word_features(text, settings)
            assert np.array_equal(idx, np.flatnonzero(row)) and np.allclose(val, row[idx], rtol=0, atol=1e-15)
    strength, _ = predictive_strength(planted.bpb, -planted.bench)
    clf, _ = train_on_strength(planted.docs, [len(t) for t in planted.docs], strength)  # word 1-2-grams
    assert [clf.score_one(t) for t in texts] == pytest.approx(clf.scores(texts).tolist(), rel=0, abs=1e-12)


def test_bad_classifier_files_give_clear_errors(planted: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        PreselectClassifier.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz") as bad:
        PreselectClassifier.load(tmp_path / "text.npz")
    assert "pickle" not in str(bad.value)  # numpy's own text suggests loading it unsafely
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(DataError, match="missing meta"):
        PreselectClassifier.load(tmp_path / "other.npz")
    strength, _ = predictive_strength(planted.bpb, -planted.bench)
    clf, _ = train_on_strength(planted.docs, [len(t) for t in planted.docs], strength, features=CHARS)
    good = dict(np.load(clf.save(tmp_path / "good.npz")))
    for change, message in (
        ({"meta": np.array(json.dumps({"format": "other/9"}))}, "unknown classifier format"),
        ({"indices": good["indices"][::-1].copy()}, "not sorted"),
        ({"quantiles": np.zeros(5)}, f"{N_QUANTILES} non-decreasing"),
        ({"values": good["values"].astype(np.float32)}, "int64/float64"),
    ):
        np.savez(tmp_path / "bad.npz", **{**good, **change})
        with pytest.raises(DataError, match=message):
            PreselectClassifier.load(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="ends in .npz"):
        clf.save(tmp_path / "clf.pkl")


def test_selection_keeps_the_top_fraction_by_bytes_or_documents() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    sizes = np.array([10, 10, 40, 30, 10])
    assert select_top(scores, sizes, 0.3).tolist() == [False, True, False, True, False]  # 10 + 30 >= 30 bytes
    assert select_top(scores, sizes, 0.4, by="documents").tolist() == [False, True, False, True, False]
    rand = select_random(sizes, 0.5, seed=1)
    order = np.random.default_rng(1).permutation(5)
    k = int(rand.sum())
    assert set(order[:k]) == set(np.flatnonzero(rand))  # a seeded random prefix ...
    assert sizes[order[:k]].sum() >= 50 > sizes[order[: k - 1]].sum()  # ... just crossing half the bytes
    assert select_random(sizes, 0.5, seed=1).tolist() == rand.tolist()
    with pytest.raises(ConfigError, match="keep fraction"):
        select_top(scores, sizes, 0.0)


def test_prepare_filter_keeps_the_valuable_half(planted: SimpleNamespace, tmp_path: Path) -> None:
    from pretrainlab.data.filters import build_filter

    strength, _ = predictive_strength(planted.bpb, -planted.bench)
    clf, _ = train_on_strength(planted.docs, [len(t) for t in planted.docs], strength, features=CHARS)
    path = str(clf.save(tmp_path / "clf.npz"))
    f = build_filter(FilterConfig(name="preselect", options={"classifier": path, "keep_fraction": 0.5}), 0)
    rng = np.random.default_rng(5)
    assert all(f.reason(chain_text(rng)) is None for _ in range(20))
    assert all(f.reason(noise_text(rng)) == "preselect" for _ in range(20))
    f2 = build_filter(FilterConfig(name="preselect", options={"classifier": path, "threshold": 0.0}), 0)
    assert f2.reason(noise_text(rng)) is None
    # in `prepare`: the filter chain removes the noise half of a JSON Lines source
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    docs = [chain_text(rng) for _ in range(10)] + [noise_text(rng) for _ in range(10)]
    (tmp_path / "mix.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "jsonl", "domain": "mix", "paths": [str(tmp_path / "mix.jsonl")]}],
        "filters": [{"name": "preselect", "options": {"classifier": path, "keep_fraction": 0.5}}],
        "tokenizer": {"kind": "bytes"}, "validation": {"fraction": 0.0}, "output": str(tmp_path / "prepared")})
    manifest = json.loads((prepare(cfg, progress=False) / "manifest.json").read_text())
    assert manifest["filters"][0]["reasons"] == {"preselect": 10}
    assert manifest["domains"]["mix"]["train"]["documents"] == 10

    for options, field in (({"classifier": str(tmp_path / "nope.npz"), "keep_fraction": 0.1}, "options.classifier"),
                           ({"classifier": path, "keep_fraction": 1.5}, "options.keep_fraction"),
                           ({"classifier": path}, "options.keep_fraction"),
                           ({"classifier": path, "threshold": 0.5, "by": "words"}, "options.by")):
        with pytest.raises(ConfigError, match=f"filters.3.{field}"):
            build_filter(FilterConfig(name="preselect", options=options), 3)
