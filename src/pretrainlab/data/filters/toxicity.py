"""`toxicity`: a word-list filter, the offline stand-in for a toxicity classifier.

C4 (Raffel et al. 2020) dropped every page holding a word of the "List of Dirty, Naughty, Obscene, and
Otherwise Bad Words"; A Pretrainer's Guide to Training Data (Longpre et al. 2023) filtered on the
Perspective API's score instead, and found that toxicity filtering lowers toxic generation but hurts
toxicity identification and some QA. This filter counts whole-word, case-insensitive matches of a word
list (default: the short list shipped in `wordlists/en.txt`) and removes a document with more than
`max_count` matches or with matches making more than `max_fraction` of its words. With neither given the
rule is C4's: one listed word removes the document (max_count 0).

Words are found with one regex pass (runs of letters and apostrophes) and looked up in a set, so the cost
does not grow with the list. Entries with a space ("two words") are matched as phrases by one compiled
regex, only when the list has any.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from pretrainlab.data.filters.base import DocumentFilter, FilterOptionError, check_range
from pretrainlab.data.filters.registry import register_filter

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def default_wordlist() -> Path:
    """The shipped English list (package data)."""
    return Path(str(resources.files("pretrainlab.data.filters") / "wordlists" / "en.txt"))


def read_wordlist(path: str | Path, key: str = "wordlist") -> list[str]:
    """Lower-cased entries of a word list file: one per line, blank lines and `#` comments skipped."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FilterOptionError(key, f"cannot read the word list {str(p)!r} ({e})") from None
    words = [" ".join(line.split()).lower() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not words:
        raise FilterOptionError(key, f"the word list {str(p)!r} has no entries (one word per line)")
    return words


@register_filter("toxicity")
class ToxicityFilter(DocumentFilter):
    """Remove documents with more than `max_count` listed words, or a larger share of words than `max_fraction`.

    Options: `wordlist` (a file, one word or phrase per line; default the shipped English list),
    `max_count` (e.g. 2 allows two), `max_fraction` (e.g. 0.01 allows one listed word per hundred); each
    applies when given, and with neither any listed word removes the document (max_count 0).
    """

    def __init__(self, wordlist: str | None = None, max_count: int | None = None,
                 max_fraction: float | None = None) -> None:
        if wordlist is not None and not isinstance(wordlist, str):
            raise FilterOptionError("wordlist", f"must be a file path (got {wordlist!r})")
        if max_count is not None:
            check_range("max_count", max_count, 0, integer=True)
        if max_fraction is not None:
            check_range("max_fraction", max_fraction, 0, 1)
        if max_count is None and max_fraction is None:
            max_count = 0
        entries = read_wordlist(wordlist if wordlist is not None else default_wordlist())
        self.words = frozenset(e for e in entries if " " not in e)
        phrases = sorted({e for e in entries if " " in e}, key=len, reverse=True)
        self.phrases = (re.compile(r"\b(?:" + "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases) + r")\b",
                                   re.IGNORECASE) if phrases else None)
        self.max_count, self.max_fraction = max_count, max_fraction

    def count(self, text: str) -> tuple[int, int]:
        """(listed words and phrases found, words in the text)."""
        tokens = _WORD.findall(text.lower())
        hits = 0
        if not self.words.isdisjoint(tokens):
            hits = sum(1 for t in tokens if t in self.words)
        if self.phrases is not None:
            hits += len(self.phrases.findall(text))
        return hits, len(tokens)

    def reason(self, text: str) -> str | None:
        hits, n = self.count(text)
        if hits == 0:
            return None
        if self.max_count is not None and hits > self.max_count:
            return "toxic_words"
        if self.max_fraction is not None and hits > self.max_fraction * max(n, 1):
            return "toxic_fraction"
        return None
