"""The built-in document filters: each quality rule fires on a document made to break it (and not when
switched off), the toxicity word list matches whole words only, MinHash dedup removes planted
near-duplicates and keeps distinct documents, deterministically."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pretrainlab.config import FilterConfig
from pretrainlab.data.filters import FILTERS, build_filter, load_builtin_filters
from pretrainlab.errors import ConfigError

# ~130 words of ordinary prose: passes every default quality rule.
CLEAN = (
    "The river runs through the old town, and the people who live there have learned to read its moods. "
    "In spring it rises with the melting snow from the hills, carrying branches and the occasional lost boat "
    "toward the sea. Children are warned to stay away from the banks, but they gather there anyway to watch "
    "the water. By summer the current slows, and fishermen return with their nets and patient dogs.\n"
    "Local historians say that the first bridge was built of wood more than four hundred years ago. It "
    "burned twice, was rebuilt in stone, and now carries cars that its builders could never have imagined. "
    "A small museum near the market keeps drawings of every version, together with letters from engineers "
    "who argued about foundations, tolls and the right shape of an arch. Visitors often stay longer than "
    "they planned, reading about floods that changed the map."
)


def quality(**options):
    return build_filter(FilterConfig(name="quality", options=options), 0)


def made_up_words(rng: random.Random, n: int) -> list[str]:
    letters = "bcdfghjklmnprstvwz"
    vowels = "aeiou"
    return ["".join(rng.choice(letters) + rng.choice(vowels) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def test_builtin_filters_are_registered():
    load_builtin_filters()
    assert {"quality", "toxicity", "minhash_dedup"} <= set(FILTERS.names())


def test_clean_prose_passes_every_default_rule():
    assert quality().reason(CLEAN) is None
    assert quality(lorem_ipsum=True, curly_bracket=True, javascript=True).reason(CLEAN) is None


@pytest.mark.parametrize(
    ("text", "reason", "off"),
    [
        ("the cat and the dog", "min_words", {"min_words": None}),
        ("the and to of " + " ".join(w * 3 for w in made_up_words(random.Random(2), 60)), "mean_word_length",
         {"max_mean_word_length": None}),
        (CLEAN + " #tag" * 20, "hash_ratio", {"max_hash_ratio": None}),
        (CLEAN + " wait..." * 20, "ellipsis_ratio", {"max_ellipsis_ratio": None}),
        (CLEAN.replace("the ", "a ").replace("The ", "A ").replace(" and ", " or ").replace(" to ", " at ")
         .replace(" of ", " in ").replace(" with ", " by ").replace(" have ", " hold "), "stop_words",
         {"min_stop_words": None}),
        (CLEAN + " 1234 ++" * 25, "alpha_words", {"min_alpha_words": None}),
        ("\n".join(f"• the item number {w} is ready with care and speed" for w in made_up_words(random.Random(0), 12)),
         "bullet_lines", {"max_bullet_lines": None}),
        ("\n".join(f"the story of {w} goes on and on without a clear end ..." for w in made_up_words(random.Random(1), 12)),
         "ellipsis_lines", {"max_ellipsis_lines": None}),
        (CLEAN + "\n" + "\n".join(["Click here to subscribe to the newsletter."] * 8), "duplicate_lines",
         {"max_duplicate_lines": None, "max_duplicate_line_chars": None}),
        (CLEAN + " big dog" * 40, "top_2gram", {"max_top_ngram_chars": {}}),
        (CLEAN + " " + CLEAN.replace("\n", " ")[:400], "duplicate_5gram", {"max_duplicate_ngram_chars": {}}),
    ],
)
def test_each_quality_rule_fires_and_can_be_switched_off(text, reason, off):
    assert quality().reason(text) == reason
    assert quality(**off).reason(text) != reason


def test_null_turns_the_ngram_rules_off_as_it_does_every_other_rule():
    """docs/filters.md: an option set to null turns its rule off (the n-gram tables included)."""
    repeated = CLEAN + " big dog" * 40
    assert quality().reason(repeated) == "top_2gram"
    assert quality(max_top_ngram_chars=None, max_duplicate_ngram_chars=None).reason(repeated) is None
    copied = CLEAN + " " + CLEAN.replace("\n", " ")[:400]
    assert quality().reason(copied) == "duplicate_5gram"
    assert quality(max_duplicate_ngram_chars=None).reason(copied) != "duplicate_5gram"


def test_duplicate_paragraphs_and_the_c4_rules():
    paragraphs = CLEAN + "\n\n" + "\n\n".join(["A long paragraph about the river and the town that repeats."] * 6)
    no_lines = {"max_duplicate_lines": None, "max_duplicate_line_chars": None}
    assert quality(**no_lines).reason(paragraphs) == "duplicate_paragraphs"
    assert quality(**no_lines, max_duplicate_paragraphs=None).reason(paragraphs) == "duplicate_paragraph_chars"
    assert quality(lorem_ipsum=True).reason(CLEAN + " Lorem ipsum dolor sit amet.") == "lorem_ipsum"
    assert quality(curly_bracket=True).reason(CLEAN + " if (x) { y(); }") == "curly_bracket"
    assert quality(javascript=True).reason(CLEAN + "\nPlease enable JavaScript to view this page.") == "javascript"
    assert quality().reason(CLEAN + " Lorem ipsum dolor sit amet. {") is None  # C4's rules are off by default


def test_repetition_rules_follow_the_gopher_thresholds():
    """A clean document plus a repeat of its own words: the duplicate 5-gram coverage crosses 15% exactly
    when the repeated part is long enough."""
    words = CLEAN.split()
    short = CLEAN + " " + " ".join(words[:5])  # one repeated 5-gram: a few percent of the characters
    assert quality().reason(short) is None
    long = CLEAN + " " + " ".join(words[:30])
    assert quality().reason(long) == "duplicate_5gram"
    assert quality(max_duplicate_ngram_chars={5: 0.9, 6: 0.9}).reason(long) is None


def test_quality_options_are_checked():
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.min_alpha_words must be in \[0, 1\]"):
        quality(min_alpha_words=1.5)
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.max_top_ngram_chars key 'x' is not an n-gram size"):
        quality(max_top_ngram_chars={"x": 0.2})
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.min_words .*above max_words"):
        quality(min_words=100, max_words=10)
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.min_word is not an option of the 'quality' filter"):
        quality(min_word=3)
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.javascript must be true or false"):
        quality(javascript="yes")


# ------------------------------------------------------------------------------------------- toxicity


def toxicity(**options):
    return build_filter(FilterConfig(name="toxicity", options=options), 0)


def test_toxicity_matches_whole_words_case_insensitively():
    f = toxicity()
    assert f.reason(CLEAN) is None
    assert f.reason(CLEAN + " What the FUCK.") == "toxic_words"
    assert f.reason(CLEAN + " They drove through Scunthorpe and ate shiitake.") is None  # no substring matches
    assert toxicity(max_count=1).reason(CLEAN + " shit") is None
    assert toxicity(max_count=1).reason(CLEAN + " shit, shit") == "toxic_words"
    assert toxicity(max_fraction=0.05).reason(CLEAN + " shit") is None
    assert toxicity(max_fraction=0.001).reason(CLEAN + " shit") == "toxic_fraction"


def test_toxicity_custom_word_list_with_phrases(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# my list\nbadword\nvery bad phrase\n\n")
    f = toxicity(wordlist=str(path))
    assert f.reason("a BadWord here") == "toxic_words"
    assert f.reason("this is a very  bad\nphrase indeed") == "toxic_words"
    assert f.reason("a very bad day, a phrase") is None
    assert f.reason("fuck") is None  # the default list is replaced, not extended
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.wordlist cannot read the word list"):
        toxicity(wordlist=str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.wordlist the word list .* has no entries"):
        toxicity(wordlist=str(tmp_path / "empty.txt"))


# ------------------------------------------------------------------------------------------- minhash


def corpus_with_near_duplicates(seed: int = 0, n_docs: int = 200, n_dups: int = 50, changed: int = 3):
    """Distinct documents of 300 made-up words, then `n_dups` copies of some of them with `changed` words
    replaced; returns (documents, indices of the planted copies)."""
    rng = random.Random(seed)
    vocab = made_up_words(rng, 5000)
    docs = [" ".join(rng.choice(vocab) for _ in range(300)) + "." for _ in range(n_docs)]
    planted = []
    for _ in range(n_dups):
        words = rng.choice(docs[:n_docs]).split()
        for _ in range(changed):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        planted.append(len(docs))
        docs.append(" ".join(words))
    return docs, planted


def minhash(**options):
    return build_filter(FilterConfig(name="minhash_dedup", options=options), 0)


def test_minhash_removes_planted_near_duplicates_and_keeps_distinct_documents():
    docs, planted = corpus_with_near_duplicates()
    f = minhash()
    removed = [i for i, d in enumerate(docs) if f.reason(d) is not None]
    assert removed == planted  # every copy with 3 of 300 words changed (Jaccard ~0.9), and nothing else
    f.reset()
    assert [i for i, d in enumerate(docs) if f.reason(d) is not None] == removed  # reset: the same again
    g = minhash(seed=7)  # another seed: other estimates, so a copy may escape (a 1-in-10,000 LSH miss at
    # Jaccard 0.9, but more likely when its estimate is low), never a distinct document removed
    removed_7 = [i for i, d in enumerate(docs) if g.reason(d) is not None]
    assert set(removed_7) <= set(planted) and len(removed_7) >= 0.95 * len(planted)


def test_minhash_keeps_documents_below_the_threshold():
    rng = random.Random(3)
    vocab = made_up_words(rng, 3000)
    base = [rng.choice(vocab) for _ in range(200)]
    half = base[:100] + [rng.choice(vocab) for _ in range(100)]  # word 5-gram Jaccard ~ 1/3
    f = minhash()
    assert f.reason(" ".join(base)) is None and f.reason(" ".join(half)) is None
    assert minhash(threshold=0.3).reason(" ".join(base)) is None
    loose = minhash(threshold=0.3)
    loose.reason(" ".join(base))
    assert loose.reason(" ".join(half)) == "near_duplicate"
    # case and punctuation do not make a copy distinct
    assert f.reason(" ".join(base).upper().replace(" ", ", ")) == "near_duplicate"


def test_minhash_signature_is_datasketch_update_batch():
    from datasketch import MinHash

    from pretrainlab.data.filters.minhash import _identity

    f = minhash(num_perm=64, seed=5)
    for text in (CLEAN, "one two", "", "!!!"):
        ref = MinHash(num_perm=64, seed=5, hashfunc=_identity, scheme="affine32")
        ref.update_batch(f.shingle_hashes(text).tolist())
        assert np.array_equal(ref.hashvalues, f.signature(text).hashvalues)
    char = minhash(shingle="char", ngram=4)
    assert char.shingle_hashes("abcdef").size == 3 and char.shingle_hashes("ab").size == 1


def test_minhash_options_are_checked():
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.threshold must be in"):
        minhash(threshold=1.5)
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.shingle must be 'word' or 'char'"):
        minhash(shingle="line")
    with pytest.raises(ConfigError, match=r"filters\.0\.options\.num_perm must be an integer"):
        minhash(num_perm=12.5)
