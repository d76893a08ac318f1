"""The data world of the PreSelect replication: a candidate pool of several real corpora, a held-out target
domain that is not in the pool, and prepared folders built from document lists.

With the shared corpora folder present the target is prose from three Project Gutenberg novels (Sherlock
Holmes, Botchan, The Wizard of Oz) and the pool mixes eight other corpora: TinyStories, WikiText-2,
Tiny Shakespeare, AG News, Common Crawl web pages, arXiv LaTeX, GSM8K questions and the Python standard
library's code. Without it (a user's clone), the built-in fallback: the target is half of the pydoc topics'
prose, the pool the other half plus stdlib code and two generated domains (random letters, arithmetic
lines). With `--data PREPARED`, its last domain's validation documents are the target and its other
domains' training documents the pool.

Long documents (arXiv papers, web pages, code files) are cut at line breaks into pieces of at most
`MAX_DOC_BYTES`, and pieces under `MIN_DOC_BYTES` (titles, blank remnants) are left out, so that documents
are of comparable size, as web documents are. Every split is seeded: the same scale gives the same world.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.errors import DataError
from pretrainlab.recipes.preselect_docs import Doc, jsonl_text, read_documents
from pretrainlab.science.corpora import CORPORA

MAX_DOC_BYTES = 2048
MIN_DOC_BYTES = 64
TARGET = "target"  # the held-out domain's name in every prepared folder

# domain -> (paths under CORPORA, options of read_documents)
POOL_CORPORA: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "stories": (("tinystories/tinystories_train_first2MiB.txt",), {"doc_split": "separator"}),
    "wiki": (("wikitext-2/wiki.valid.tokens",), {"doc_split": "blank_lines"}),
    "shakespeare": (("tinyshakespeare/input.txt",), {"doc_split": "blank_lines"}),
    "news": (("agnews/dev.tsv",), {"doc_split": "line"}),
    "web": (("web-commoncrawl-sample/cc_en_head-0091.jsonl", "web-commoncrawl-sample/cc_en_head-0174.jsonl"), {}),
    "arxiv": (("arxiv-sample/arxiv.jsonl",), {}),
    "math": (("gsm8k/train.jsonl",), {"text_field": "question"}),
}
TARGET_CORPUS = ("gutenberg-books/sherlock_holmes.txt", "gutenberg-books/botchan.txt",
                 "gutenberg-books/wizard_of_oz.txt")


@dataclass
class Pool:
    """The documents of the protocol: per pool domain, the reference runs' training documents and the
    candidates to select from; the target's documents that rank the reference runs (`bench`) and the ones
    the compared models are evaluated on (`evaluation`), disjoint."""

    reference: dict[str, list[Doc]]
    candidates: dict[str, list[Doc]]
    bench: list[Doc]
    evaluation: list[Doc]
    origin: str


def build_pool(data: Path | None, *, ref_docs: int, cand_docs: int, bench_docs: int, eval_docs: int,
               seed: int = 0) -> Pool:
    """The pool from `--data` (a prepared folder), else the shared corpora, else the built-in fallback; per
    domain at most `ref_docs` reference and `cand_docs` candidate documents (half each when it has fewer)."""
    if data is not None:
        domains, target, origin = _prepared_domains(Path(data))
    elif all((CORPORA / p).is_file() for paths, _ in POOL_CORPORA.values() for p in paths) and \
            all((CORPORA / p).is_file() for p in TARGET_CORPUS):
        domains, target, origin = _corpora_domains()
    else:
        domains, target, origin = _builtin_domains(seed)
    rng = np.random.default_rng(seed)
    reference, candidates = {}, {}
    for name, docs in domains.items():
        docs = [docs[i] for i in rng.permutation(len(docs))]
        n_ref = min(ref_docs, len(docs) // 2)
        reference[name] = docs[:n_ref]
        candidates[name] = docs[n_ref : n_ref + cand_docs]
    target = [target[i] for i in rng.permutation(len(target))]
    if len(target) < 4:
        raise DataError(f"the target domain has {len(target)} documents; the protocol needs at least 4",
                        hint="give the target domain more validation documents")
    n_bench = min(bench_docs, len(target) // 2)
    return Pool(reference, candidates, target[:n_bench], target[n_bench : n_bench + eval_docs], origin)


def _prepared_domains(path: Path) -> tuple[dict[str, list[Doc]], list[Doc], str]:
    from pretrainlab.data.prepared import PreparedData

    names = PreparedData(path).domains
    if len(names) < 3:
        raise DataError(f"--data {path}: PreSelect needs at least two pool domains and a target (the last "
                        f"domain), it has {names}", hint="prepare the data with three or more domains")
    pool = {d: _sized(read_documents([path], domains=[d], split="train"), d) for d in names[:-1]}
    target = _sized(read_documents([path], domains=[names[-1]], split="val"), TARGET)
    return pool, target, f"--data {path}: pool {', '.join(names[:-1])}; target the validation split of {names[-1]}"


def _corpora_domains() -> tuple[dict[str, list[Doc]], list[Doc], str]:
    pool: dict[str, list[Doc]] = {}
    for domain, (paths, options) in POOL_CORPORA.items():
        pool[domain] = _sized(read_documents([CORPORA / p for p in paths], **options), domain)
    pool["code"] = _sized(read_documents([_stdlib() / "*.py"], doc_split="blank_lines"), "code")
    target = _sized(read_documents([CORPORA / p for p in TARGET_CORPUS], doc_split="blank_lines"), TARGET)
    return pool, target, (f"{CORPORA}: target = paragraphs of three Project Gutenberg novels; pool = TinyStories, "
                          "WikiText-2, Tiny Shakespeare, AG News, Common Crawl, arXiv, GSM8K questions, stdlib code")


def _builtin_domains(seed: int) -> tuple[dict[str, list[Doc]], list[Doc], str]:
    prose = _sized(read_documents([_stdlib() / "pydoc_data" / "topics.py"], doc_split="blank_lines"), "prose")
    order = np.random.default_rng(seed + 1).permutation(len(prose))
    half = len(prose) // 2
    target = [Doc(prose[i].id, TARGET, prose[i].text, prose[i].n_bytes) for i in order[:half]]
    rng = np.random.default_rng(seed + 2)
    letters = "abcdefghijklmnopqrstuvwxyz     \n"
    noise = ["".join(letters[j] for j in rng.integers(len(letters), size=int(rng.integers(200, 1500))))
             for _ in range(600)]
    sums = ["\n".join(f"{a} + {b} = {a + b}" for a, b in rng.integers(0, 1000, size=(int(rng.integers(10, 60)), 2)))
            for _ in range(600)]
    pool = {
        "prose": [prose[i] for i in order[half:]],
        "code": _sized(read_documents([_stdlib() / "*.py"], doc_split="blank_lines"), "code"),
        "noise": [Doc(f"noise#{i}", "noise", t, len(t)) for i, t in enumerate(noise)],
        "numbers": [Doc(f"numbers#{i}", "numbers", t, len(t)) for i, t in enumerate(sums)],
    }
    return pool, target, ("the built-in fallback (no shared corpora): target = half of the pydoc topics' prose; "
                          "pool = the other half, stdlib code, generated random letters and arithmetic lines")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _sized(docs: Sequence[Doc], domain: str) -> list[Doc]:
    """Documents of `domain` cut at line breaks into pieces of at most MAX_DOC_BYTES; pieces under
    MIN_DOC_BYTES are left out."""
    out: list[Doc] = []
    for d in docs:
        for k, piece in enumerate(_pieces(d.text)):
            n = len(piece.encode("utf-8"))
            if n >= MIN_DOC_BYTES:
                out.append(Doc(f"{d.id}.{k}", domain, piece, n))
    return out


def _pieces(text: str) -> list[str]:
    if len(text.encode("utf-8")) <= MAX_DOC_BYTES:
        return [text]
    pieces, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if current and size + n > MAX_DOC_BYTES:
            pieces.append("".join(current))
            current, size = [], 0
        while n > MAX_DOC_BYTES:  # one very long line: cut it (at a character boundary)
            cut = line.encode("utf-8")[:MAX_DOC_BYTES].decode("utf-8", "ignore")
            pieces.append(cut)
            line = line[len(cut):]
            n = len(line.encode("utf-8"))
        current.append(line)
        size += n
    if current:
        pieces.append("".join(current))
    return pieces


def prepare_docs(folder: Path, train: dict[str, Sequence[Doc]], val: dict[str, Sequence[Doc]]) -> Path:
    """A prepared folder (byte tokenizer) at `folder`: each domain's `train` documents in its train split and
    its `val` documents in its validation split. Reused when it already holds exactly these documents."""
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    digest = hashlib.sha256()
    for split, docs in (("train", train), ("val", val)):
        for domain in sorted(docs):
            digest.update(f"{split}\0{domain}\0".encode())
            for d in docs[domain]:
                digest.update(hashlib.sha256(d.text.encode("utf-8")).digest())
    stamp = folder.parent / f"{folder.name}.docs-sha256"
    if (folder / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return folder
    src = folder.parent / f"{folder.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    sources, val_files = [], []
    for domain in dict.fromkeys([*train, *val]):
        paths = []
        for split, docs in (("train", train.get(domain, [])), ("val", val.get(domain, []))):
            if docs:
                path = src / f"{domain}-{split}.jsonl"
                path.write_text(jsonl_text({"text": d.text} for d in docs), encoding="utf-8")
                paths.append(path.as_posix())
                if split == "val":
                    val_files.append(path.as_posix())
        sources.append({"type": "jsonl", "domain": domain, "paths": paths})
    cfg = validate(PrepareConfig, {"sources": sources, "tokenizer": {"kind": "bytes"},
                                   "validation": {"fraction": 0.0, "files": val_files},
                                   "output": str(folder), "overwrite": True}, source="preselect replication data")
    out = Path(prepare(cfg, progress=False))
    stamp.write_text(digest.hexdigest())
    return out


def domain_shares(docs: Sequence[Doc], keep: np.ndarray) -> dict[str, float]:
    """Each source's share of the kept bytes."""
    kept: dict[str, int] = {d.source: 0 for d in docs}
    for d, k in zip(docs, keep):
        kept[d.source] += d.n_bytes if k else 0
    total = sum(kept.values()) or 1
    return {s: n / total for s, n in kept.items()}


__all__ = ["Pool", "TARGET", "build_pool", "domain_shares", "prepare_docs"]
