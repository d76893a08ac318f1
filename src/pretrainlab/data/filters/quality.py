"""`quality`: heuristic document quality rules of Gopher (Rae et al. 2021, appendix A.1.1) and C4 (Raffel et
al. 2020, section 2.2), as used in the ablations of A Pretrainer's Guide to Training Data (Longpre et al. 2023).

Every rule is one option with Gopher's published threshold as its default; set an option to null to turn
its rule off. The rules run from the cheapest to the dearest and the first that fails names the removal:

    min_words / max_words              50 .. 100,000 whitespace-separated words
    mean_word_length                   mean word length within [3, 10] characters
    hash_ratio / ellipsis_ratio        at most 0.1 "#" (and "..." or "…") per word
    stop_words                         at least 2 of: the, be, to, of, and, that, have, with
    alpha_words                        at least 80% of words contain an alphabetic character
    bullet_lines / ellipsis_lines      at most 90% of lines start with a bullet, 30% end with an ellipsis
    duplicate_lines / _line_chars      at most 30% of lines (20% of characters) repeat an earlier line
    duplicate_paragraphs / _chars      the same for paragraphs (split at blank lines)
    top_2gram .. top_4gram             the most frequent word n-gram covers at most 20 / 18 / 16% of the
                                       word characters
    duplicate_5gram .. duplicate_10gram  word n-grams that occur more than once cover at most
                                       15 / 14 / 13 / 12 / 11 / 10% of the word characters
    lorem_ipsum, curly_bracket, javascript   C4's rules, off by default: "lorem ipsum" anywhere, a "{" anywhere
                                       (drops all code), a line mentioning "javascript" (C4 drops the line;
                                       a document filter can only drop the document)

The repetition rules follow the Gopher definitions as RedPajama-v2 computes them (characters of the words
covered by any occurrence of a repeated n-gram, over the characters of all words). These rules were tuned
for English web text: run them on the web-like domains (`domains: [web]`), not on code or math.

Speed: words are compared through Python's string hashes, so the n-gram counting is numpy on int64
arrays; a collision of two 64-bit hashes (never seen in practice) could only make a rule see a repeat that
is not there. Coverage of repeated n-grams shrinks as n grows, so the 6..10-gram rules are evaluated only
when the 5-gram coverage exceeds the smallest of their thresholds.
"""

from __future__ import annotations

import re
from itertools import filterfalse
from operator import methodcaller
from typing import Any

import numpy as np

from pretrainlab.data.filters.base import DocumentFilter, FilterOptionError, check_range
from pretrainlab.data.filters.registry import register_filter

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "⁃", "◦", "▪", "●", "·", "-", "*", "–", "—")
TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DUPLICATE_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
_JAVASCRIPT = re.compile(r"javascript", re.IGNORECASE)
_starts_with_bullet = methodcaller("startswith", BULLETS)
_ends_with_ellipsis = methodcaller("endswith", ("...", "…"))
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: n-gram keys are a polynomial in it over the word hashes


@register_filter("quality")
class QualityFilter(DocumentFilter):
    """Gopher's quality and repetition rules (and C4's, optional); see the module docstring for each option."""

    def __init__(
        self,
        min_words: int | None = 50,
        max_words: int | None = 100_000,
        min_mean_word_length: float | None = 3.0,
        max_mean_word_length: float | None = 10.0,
        max_hash_ratio: float | None = 0.1,
        max_ellipsis_ratio: float | None = 0.1,
        min_stop_words: int | None = 2,
        min_alpha_words: float | None = 0.8,
        max_bullet_lines: float | None = 0.9,
        max_ellipsis_lines: float | None = 0.3,
        max_duplicate_lines: float | None = 0.3,
        max_duplicate_line_chars: float | None = 0.2,
        max_duplicate_paragraphs: float | None = 0.3,
        max_duplicate_paragraph_chars: float | None = 0.2,
        max_top_ngram_chars: dict[Any, float] | None = TOP_NGRAMS,
        max_duplicate_ngram_chars: dict[Any, float] | None = DUPLICATE_NGRAMS,
        lorem_ipsum: bool = False,
        curly_bracket: bool = False,
        javascript: bool = False,
    ) -> None:
        for key, value in (("min_words", min_words), ("max_words", max_words), ("min_stop_words", min_stop_words)):
            if value is not None:
                check_range(key, value, 0, integer=True)
        for key, value in (("min_mean_word_length", min_mean_word_length),
                           ("max_mean_word_length", max_mean_word_length),
                           ("max_hash_ratio", max_hash_ratio), ("max_ellipsis_ratio", max_ellipsis_ratio)):
            if value is not None:
                check_range(key, value, 0)
        for key, value in (("min_alpha_words", min_alpha_words), ("max_bullet_lines", max_bullet_lines),
                           ("max_ellipsis_lines", max_ellipsis_lines), ("max_duplicate_lines", max_duplicate_lines),
                           ("max_duplicate_line_chars", max_duplicate_line_chars),
                           ("max_duplicate_paragraphs", max_duplicate_paragraphs),
                           ("max_duplicate_paragraph_chars", max_duplicate_paragraph_chars)):
            if value is not None:
                check_range(key, value, 0, 1)
        for key, value in (("lorem_ipsum", lorem_ipsum), ("curly_bracket", curly_bracket), ("javascript", javascript)):
            if not isinstance(value, bool):
                raise FilterOptionError(key, f"must be true or false (got {value!r})")
        if min_words is not None and max_words is not None and min_words > max_words:
            raise FilterOptionError("min_words", f"{min_words} is above max_words {max_words}")
        self.min_words, self.max_words = min_words, max_words
        self.min_mean_word_length, self.max_mean_word_length = min_mean_word_length, max_mean_word_length
        self.max_hash_ratio, self.max_ellipsis_ratio = max_hash_ratio, max_ellipsis_ratio
        self.min_stop_words, self.min_alpha_words = min_stop_words, min_alpha_words
        self.max_bullet_lines, self.max_ellipsis_lines = max_bullet_lines, max_ellipsis_lines
        self.max_duplicate_lines, self.max_duplicate_line_chars = max_duplicate_lines, max_duplicate_line_chars
        self.max_duplicate_paragraphs = max_duplicate_paragraphs
        self.max_duplicate_paragraph_chars = max_duplicate_paragraph_chars
        self.top_ngrams = _ngram_table("max_top_ngram_chars", max_top_ngram_chars, TOP_NGRAMS)
        self.duplicate_ngrams = _ngram_table("max_duplicate_ngram_chars", max_duplicate_ngram_chars, DUPLICATE_NGRAMS)
        self.lorem_ipsum, self.curly_bracket, self.javascript = lorem_ipsum, curly_bracket, javascript

    def reason(self, text: str) -> str | None:
        words = text.lower().split()  # str.lower keeps lengths (but for a few letters such as U+0130)
        n = len(words)
        if self.min_words is not None and n < self.min_words:
            return "min_words"
        if self.max_words is not None and n > self.max_words:
            return "max_words"
        if n == 0:
            return None  # every rule below is a ratio over words
        word_chars = sum(map(len, words))
        mean_len = word_chars / n
        if self.min_mean_word_length is not None and mean_len < self.min_mean_word_length:
            return "mean_word_length"
        if self.max_mean_word_length is not None and mean_len > self.max_mean_word_length:
            return "mean_word_length"
        if self.max_hash_ratio is not None and text.count("#") > self.max_hash_ratio * n:
            return "hash_ratio"
        if self.max_ellipsis_ratio is not None and text.count("...") + text.count("…") > self.max_ellipsis_ratio * n:
            return "ellipsis_ratio"
        if self.curly_bracket and "{" in text:
            return "curly_bracket"
        if self.lorem_ipsum and _LOREM.search(text):
            return "lorem_ipsum"
        if self.min_stop_words is not None and len(STOP_WORDS.intersection(words)) < self.min_stop_words:
            return "stop_words"
        if self.min_alpha_words is not None:
            rest = list(filterfalse(str.isalpha, words))
            # the all-letter words alone fall short: count the words without any letter among the others
            if n - len(rest) < self.min_alpha_words * n and n - len(_NO_LETTER_WORD.findall(" ".join(rest))) < (
                    self.min_alpha_words * n):
                return "alpha_words"
        lines = [line for line in text.split("\n") if line.strip()]
        found = self._line_rules(lines)
        if found is None:
            found = self._paragraph_rules(text)
        if found is None:
            found = self._ngram_rules(words, word_chars)
        return found

    def _line_rules(self, lines: list[str]) -> str | None:
        if not lines:
            return None
        if self.javascript and any(_JAVASCRIPT.search(line) for line in lines):
            return "javascript"
        if self.max_bullet_lines is not None:
            bullets = sum(map(_starts_with_bullet, map(str.lstrip, lines)))
            if bullets > self.max_bullet_lines * len(lines):
                return "bullet_lines"
        if self.max_ellipsis_lines is not None:
            ellipses = sum(map(_ends_with_ellipsis, map(str.rstrip, lines)))
            if ellipses > self.max_ellipsis_lines * len(lines):
                return "ellipsis_lines"
        return _duplicate_rule(lines, self.max_duplicate_lines, self.max_duplicate_line_chars,
                               "duplicate_lines", "duplicate_line_chars")

    def _paragraph_rules(self, text: str) -> str | None:
        if self.max_duplicate_paragraphs is None and self.max_duplicate_paragraph_chars is None:
            return None
        paragraphs = [p.strip() for p in _PARAGRAPHS.split(text) if p.strip()]
        return _duplicate_rule(paragraphs, self.max_duplicate_paragraphs, self.max_duplicate_paragraph_chars,
                               "duplicate_paragraphs", "duplicate_paragraph_chars")

    def _ngram_rules(self, words: list[str], word_chars: int) -> str | None:
        if not self.top_ngrams and not self.duplicate_ngrams:
            return None
        keys = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        grams = NgramKeys(keys)
        for n, limit in self.top_ngrams.items():
            if len(words) > n and _top_ngram_chars(grams.of(n), lengths, n) > limit * word_chars:
                return f"top_{n}gram"
        if self.duplicate_ngrams:
            smallest = min(self.duplicate_ngrams.values())
            first = min(self.duplicate_ngrams)
            covered = _duplicate_ngram_chars(grams.of(first), lengths, first)
            if covered > self.duplicate_ngrams[first] * word_chars:
                return f"duplicate_{first}gram"
            if covered > smallest * word_chars:  # coverage only shrinks with n: else every rule below passes
                for n, limit in self.duplicate_ngrams.items():
                    if n != first and _duplicate_ngram_chars(grams.of(n), lengths, n) > limit * word_chars:
                        return f"duplicate_{n}gram"
        return None


def _ngram_table(key: str, value: dict[Any, float] | None, default: dict[int, float]) -> dict[int, float]:
    """{n: max fraction} from an option ({} or null turns the rules off, as null does every other rule's;
    keys may be strings, from JSON)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FilterOptionError(key, f"must be a mapping n -> max fraction, e.g. {default} (got {value!r})")
    out: dict[int, float] = {}
    for n, limit in value.items():
        try:
            size = int(n)
        except (TypeError, ValueError):
            raise FilterOptionError(key, f"key {n!r} is not an n-gram size") from None
        if size < 1:
            raise FilterOptionError(key, f"n-gram size {size} must be >= 1")
        if limit is None:
            continue
        check_range(f"{key}.{n}", limit, 0, 1)
        out[size] = float(limit)
    return dict(sorted(out.items()))


def _duplicate_rule(items: list[str], max_items: float | None, max_chars: float | None,
                    name_items: str, name_chars: str) -> str | None:
    """Gopher's duplicate-line (paragraph) rules: occurrences after the first, by count and by characters."""
    if not items or (max_items is None and max_chars is None):
        return None
    unique = set(items)
    if len(unique) == len(items):
        return None
    seen: set[str] = set()
    dup_count = dup_chars = 0
    for item in items:
        if item in seen:
            dup_count += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    if max_items is not None and dup_count > max_items * len(items):
        return name_items
    if max_chars is not None and dup_chars > max_chars * sum(map(len, items)):
        return name_chars
    return None


class NgramKeys:
    """One uint64 key per word n-gram, for growing n: key_n[i] = key_{n-1}[i] * _MULT + word[i + n - 1]
    (wrapping), so each n costs one multiply-add over the previous n's keys."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words
        self._n, self._keys = 1, words

    def of(self, n: int) -> np.ndarray:
        if n < self._n:
            self._n, self._keys = 1, self.words
        while self._n < n:
            self._keys = self._keys[:-1] * _MULT + self.words[self._n :]
            self._n += 1
        return self._keys


def _top_ngram_chars(grams: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters (words' characters, n-gram by n-gram) covered by the most frequent n-gram, if it repeats; of
    equally frequent ones, the first in the text (as Counter.most_common, independent of the hash values)."""
    m = grams.size
    if m < 2:
        return 0
    order = grams.argsort()
    s = grams[order]
    new_run = np.empty(m, dtype=bool)
    new_run[0] = True
    np.not_equal(s[1:], s[:-1], out=new_run[1:])
    starts = new_run.nonzero()[0]
    if starts.size == m:
        return 0  # no n-gram repeats
    counts = np.empty(starts.size, dtype=np.intp)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = m - starts[-1]
    top = counts.max()
    tied = (counts == top).nonzero()[0]
    if tied.size == 1:
        first = int(order[starts[tied[0]]])
    else:  # the first occurrence of each tied n-gram, then the earliest of them
        first = int(np.minimum.reduceat(order, starts)[tied].min())
    return int(top) * int(lengths[first : first + n].sum())


def _duplicate_ngram_chars(grams: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of the words covered by any occurrence of an n-gram that occurs more than once."""
    if grams.size < 2:
        return 0
    order = np.argsort(grams)
    s = grams[order]
    same = s[1:] == s[:-1]
    if not same.any():
        return 0
    repeated = np.zeros(s.size, dtype=bool)
    repeated[:-1] |= same
    repeated[1:] |= same
    starts = order[repeated]
    marks = np.zeros(lengths.size + 1, dtype=np.int64)
    marks[starts] += 1  # starts are distinct, so plain fancy-index updates count each once
    marks[starts + n] -= 1
    covered = np.cumsum(marks[:-1]) > 0
    return int(lengths[covered].sum())
