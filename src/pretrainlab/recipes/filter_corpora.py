"""Documents for the dedup and quality-filter replications: real English text, near-duplicate copies of it,
and generated web junk.

Real text, by domain, from the shared local corpora when present: `stories` (TinyStories), `wiki`
(WikiText-2 validation articles, its " @-@ " tokenisation undone), `books` (three Project Gutenberg novels,
cut into chunks of consecutive lines) and `web` (the Common Crawl sample). Without them (a user's clone) one
domain, `docs`: the Python documentation's topic pages that ship with the standard library
(`pydoc_data.topics`, about 460 KB of English prose), cut into chunks the same way.

Near-duplicates (`near_copy`) change about one word in a hundred (at least one), the kind of copy a
mirror, a template or a scraper makes. Junk (`junk_document`) imitates what heuristic web filters remove:
navigation and cookie boilerplate, symbol soup, one line repeated, keyword spam, link lists, short
fragments and number tables, built from words of the real text.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from pretrainlab.science.corpora import CORPORA

BOOKS = ("sherlock_holmes.txt", "botchan.txt", "wizard_of_oz.txt")
CHUNK_CHARS = (800, 3000)  # book / wiki / docs chunks: a length drawn uniformly in this range
_WIKI_FIXES = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "), (" 's", "'s"))


def real_documents(seed: int = 0) -> tuple[dict[str, list[str]], str]:
    """({domain: documents}, where they come from): the shared corpora when present, else the stdlib's
    documentation topics; each domain's documents in a fixed order shuffled by `seed`."""
    rng = random.Random(seed)
    if corpora_present():
        docs = {
            "stories": _split(_read(CORPORA / "tinystories" / "tinystories_train_first2MiB.txt"), "<|endoftext|>"),
            "wiki": _chunks(_wiki_text(CORPORA / "wikitext-2" / "wiki.valid.tokens"), rng),
            "books": [c for b in BOOKS for c in _chunks(_gutenberg_body(_read(CORPORA / "gutenberg-books" / b)), rng)],
            "web": _web_documents(CORPORA / "web-commoncrawl-sample"),
        }
        origin = (f"{CORPORA}: stories = TinyStories (first 2 MiB), wiki = WikiText-2 validation, books = "
                  f"Gutenberg {', '.join(BOOKS)}, web = the Common Crawl sample")
    else:
        import pydoc_data.topics

        text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
        docs = {"docs": _chunks(text, rng)}
        origin = "built-in: the Python documentation topics shipped with the standard library (pydoc_data)"
    for domain in docs:
        rng.shuffle(docs[domain])
    return {d: v for d, v in docs.items() if v}, origin


def documents_for(data: Path | None, seed: int = 0) -> tuple[dict[str, list[str]], str]:
    """The real documents of a replication: those of the prepared folder `data` (`--data`, decoded with its
    tokenizer; its train and validation documents alike) when given, else `real_documents(seed)`."""
    if data is None:
        return real_documents(seed)
    from pretrainlab.data.prepared import PreparedData

    prepared = PreparedData(data)
    rng = random.Random(seed)
    docs: dict[str, list[str]] = {}
    for domain in prepared.domains:
        texts = []
        for split in ("train", "val"):
            shard = prepared.shard(domain, split)
            for i in range(shard.n_docs):
                tokens = shard.tokens[shard.offsets[i] : shard.offsets[i + 1] - 1]  # without its end-of-text
                texts.append(prepared.tokenizer.decode(tokens))
        rng.shuffle(texts)
        docs[domain] = [t for t in texts if t.strip()]
    return {d: v for d, v in docs.items() if v}, f"--data {data} (its documents, decoded)"


def take_bytes(docs: list[str], n_bytes: int) -> tuple[list[str], list[str]]:
    """The first documents until `n_bytes` of UTF-8 are reached (at least one), and the rest."""
    total = 0
    for k, d in enumerate(docs):
        if total >= n_bytes:
            return docs[:k], docs[k:]
        total += len(d.encode("utf-8"))
    return docs, []


def corpora_present() -> bool:
    files = [CORPORA / "tinystories" / "tinystories_train_first2MiB.txt", CORPORA / "wikitext-2" / "wiki.valid.tokens",
             *(CORPORA / "gutenberg-books" / b for b in BOOKS)]
    return all(p.is_file() for p in files)


# ------------------------------------------------------------------------------------------- near-duplicates

_TOKENS = re.compile(r"(\s+)")


def near_copy(doc: str, rng: random.Random, vocab: list[str], edits_per_100_words: float = 1.0) -> str:
    """`doc` with about `edits_per_100_words` of every hundred words (at least one) replaced by words of
    `vocab`; whitespace and line breaks kept."""
    parts = _TOKENS.split(doc)
    words = list(range(0, len(parts), 2))
    words = [i for i in words if parts[i]]
    if not words:
        return doc + " " + rng.choice(vocab)
    for i in rng.sample(words, max(1, min(len(words), round(len(words) * edits_per_100_words / 100)))):
        parts[i] = rng.choice(vocab)
    return "".join(parts)


def vocabulary(docs: list[str], size: int = 5000) -> list[str]:
    """The `size` most frequent words (letters only) of `docs`, most frequent first."""
    from collections import Counter

    counts = Counter(w for d in docs for w in re.findall(r"[A-Za-z]+", d))
    return [w for w, _ in counts.most_common(size)]


# ------------------------------------------------------------------------------------------- junk

_MENU = ("Home", "About", "About Us", "Contact", "Blog", "Shop", "Cart", "Login", "Register", "FAQ", "Careers",
         "Press", "Support", "Sitemap", "Search", "Menu", "News", "Events", "Gallery", "Downloads")
_BOILER = (
    "We use cookies to improve your experience. By continuing you agree to our use of cookies.",
    "Accept all cookies", "Skip to main content", "Sign up for our newsletter", "Share on Facebook",
    "Share on Twitter", "Privacy Policy", "Terms of Use", "All rights reserved.", "Back to top",
    "Click here to subscribe", "Log in to reply", "Read more", "Previous post", "Next post", "Powered by WordPress",
    "This site uses Akismet to reduce spam.", "Your email address will not be published.", "Leave a comment",
)
_SYMBOLS = ("###", "...", "@@", "%%", "||", ">>", "<<", "**", "~~", "$$", "#", "&&", "^^", "==")


def _boilerplate(rng: random.Random, vocab: list[str]) -> str:
    site = rng.choice(vocab).capitalize() + rng.choice(("Online", "Hub", "World", "Direct", "Daily"))
    lines = [" | ".join(rng.sample(_MENU, rng.randint(4, 8))) for _ in range(rng.randint(2, 4))]
    lines += [rng.choice(_BOILER) for _ in range(rng.randint(8, 20))]
    lines += [f"© {rng.randint(2005, 2023)} {site}. All rights reserved."] * rng.randint(1, 3)
    rng.shuffle(lines)
    return "\n".join(lines)


def _symbol_soup(rng: random.Random, vocab: list[str]) -> str:
    out = []
    for _ in range(rng.randint(80, 300)):
        r = rng.random()
        out.append(rng.choice(_SYMBOLS) if r < 0.35 else str(rng.randint(0, 9999)) if r < 0.55 else rng.choice(vocab))
    return " ".join(out)


def _repeated_line(rng: random.Random, vocab: list[str]) -> str:
    line = " ".join(rng.choice(vocab) for _ in range(rng.randint(6, 14))).capitalize() + "!"
    return "\n".join([line] * rng.randint(10, 40))


def _keyword_spam(rng: random.Random, vocab: list[str]) -> str:
    keys = rng.sample(vocab[:500], 2)
    templates = ("best {0} {1}", "cheap {0} {1}", "buy {0} {1} online", "{0} {1} for sale", "top {0} {1} deals",
                 "discount {0} {1}", "{0} {1} near me")
    return " ".join(rng.choice(templates).format(*keys) for _ in range(rng.randint(30, 80)))


def _link_list(rng: random.Random, vocab: list[str]) -> str:
    bullet = rng.choice(("•", "-", "*", "·"))
    return "\n".join(f"{bullet} {rng.choice(vocab).capitalize()} {rng.choice(vocab)} ({rng.randint(1, 999)})"
                     for _ in range(rng.randint(15, 60)))


def _fragment(rng: random.Random, vocab: list[str]) -> str:
    return rng.choice(("Page not found.", "Loading...", "Error 404", "Please enable JavaScript.", "Coming soon!",
                       f"{rng.choice(vocab).capitalize()} - {rng.choice(vocab)}", "Access denied", "Untitled"))


def _number_table(rng: random.Random, vocab: list[str]) -> str:
    rows = []
    for _ in range(rng.randint(10, 40)):
        rows.append(" | ".join(f"{rng.uniform(0, 1000):.{rng.randint(0, 2)}f}" for _ in range(rng.randint(3, 8))))
    return rng.choice(vocab).capitalize() + "\n" + "\n".join(rows)


JUNK_KINDS: dict[str, Callable[[random.Random, list[str]], str]] = {
    "boilerplate": _boilerplate,
    "symbol_soup": _symbol_soup,
    "repeated_line": _repeated_line,
    "keyword_spam": _keyword_spam,
    "link_list": _link_list,
    "fragment": _fragment,
    "number_table": _number_table,
}


def junk_document(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    """(kind, text) of one generated junk document, the kind drawn uniformly."""
    kind = rng.choice(sorted(JUNK_KINDS))
    return kind, JUNK_KINDS[kind](rng, vocab)


# ------------------------------------------------------------------------------------------- readers


def jsonl_text(texts: list[str]) -> str:
    """`texts` as {"text": ...} lines, the content `write_jsonl` writes."""
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    """`texts` as {"text": ...} lines at `path` (atomically)."""
    from pretrainlab.io_atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, jsonl_text(texts))
    return path


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")


def _split(text: str, separator: str) -> list[str]:
    return [d.strip() for d in text.split(separator) if d.strip()]


def _chunks(text: str, rng: random.Random) -> list[str]:
    """Consecutive lines packed into chunks of CHUNK_CHARS characters (a length drawn per chunk)."""
    out, lines, size = [], [], 0
    target = rng.randint(*CHUNK_CHARS)
    for line in text.splitlines():
        lines.append(line)
        size += len(line) + 1
        if size >= target:
            chunk = "\n".join(lines).strip()
            if chunk:
                out.append(chunk)
            lines, size, target = [], 0, rng.randint(*CHUNK_CHARS)
    if "\n".join(lines).strip():
        out.append("\n".join(lines).strip())
    return out


def _wiki_text(path: Path) -> str:
    text = _read(path)
    for a, b in _WIKI_FIXES:
        text = text.replace(a, b)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _gutenberg_body(text: str) -> str:
    """The book without Project Gutenberg's header and licence (between the START and END markers)."""
    start = re.search(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n", text)
    end = re.search(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", text)
    return text[start.end() if start else 0 : end.start() if end else len(text)]


def _web_documents(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            out += [json.loads(line)["text"] for line in f if line.strip()]
    return [t for t in out if t.strip()]
