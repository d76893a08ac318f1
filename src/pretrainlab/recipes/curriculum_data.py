"""The two domains of the curriculum replication: `general` text and a `qa` target domain.

daVinci-LLM (Qin et al., arXiv 2603.27164) trains on broad web/code/science text first and shifts the
mixture towards question-answer data at the end. The replication mirrors that with two domains in one
prepared folder (byte tokenizer, 5% of each domain's documents held out for validation):

- with `../shared/data/corpora` present: `general` = WikiText-2 (valid) + three Project Gutenberg novels
  (Sherlock Holmes, Botchan, The Wizard of Oz), `qa` = the GSM8K training set, each problem written as
  "Question: ...\\nAnswer: ..." (answers as published, calculator annotations and the final "#### n" kept);
- without them (a user's clone): `general` = the Python standard library's source (the built-in corpus),
  `qa` = generated arithmetic word problems in the same question/answer format (`arithmetic_qa`);
- or `--data PREPARED`, a prepared folder that has domains named `general` and `qa`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainlab.errors import DataError
from pretrainlab.science.corpora import CORPORA

DOMAINS = ("general", "qa")
BOOKS = ("sherlock_holmes.txt", "botchan.txt", "wizard_of_oz.txt")
FALLBACK_QA_DOCUMENTS = 20_000  # about 3 MB of generated problems: no repetition at either scale


@dataclass(frozen=True)
class CurriculumData:
    path: Path  # a prepared folder with domains `general` and `qa`
    origin: str  # what the domains are, for the notes


def prepare_domains(out: Path, data: Path | None) -> CurriculumData:
    """`data` when given (it must have domains general and qa), else the shared corpora when present, else the
    built-in fallback; prepared once under `out / "data"` and reused."""
    from pretrainlab.data.prepared import PreparedData

    if data is not None:
        have = PreparedData(data).domains
        missing = [d for d in DOMAINS if d not in have]
        if missing:
            raise DataError(f"--data {data}: the curriculum replication needs domains {list(DOMAINS)}; it has "
                            f"{have} (missing {missing})",
                            hint="prepare the data with sources of domain `general` (broad text) and `qa` "
                            "(the target question-answer data), or leave out --data")
        return CurriculumData(Path(data), f"--data {data}")
    sources_dir = out / "data" / "sources"
    if _corpora_present():
        qa = gsm8k_qa_jsonl(CORPORA / "gsm8k" / "train.jsonl", sources_dir / "gsm8k_qa.jsonl")
        general = [CORPORA / "wikitext-2" / "wiki.valid.tokens", *(CORPORA / "gutenberg-books" / b for b in BOOKS)]
        sources = [{"type": "text", "domain": "general", "paths": [p.as_posix() for p in general],
                    "split": "blank_lines"},
                   {"type": "jsonl", "domain": "qa", "paths": [qa.as_posix()]}]
        path = _prepare(out / "data" / "corpora-bytes", sources)
        return CurriculumData(path, f"{CORPORA}: general = WikiText-2 (valid) + Gutenberg novels ({', '.join(BOOKS)}); "
                              "qa = GSM8K train problems as 'Question: ...\\nAnswer: ...'")
    qa = arithmetic_qa_jsonl(sources_dir / "arithmetic_qa.jsonl", FALLBACK_QA_DOCUMENTS, seed=0)
    sources = [{"type": "stdlib", "domain": "general"}, {"type": "jsonl", "domain": "qa", "paths": [qa.as_posix()]}]
    path = _prepare(out / "data" / "stdlib-qa-bytes", sources)
    return CurriculumData(path, "built-in: general = the Python standard library's source; qa = "
                          f"{FALLBACK_QA_DOCUMENTS:,} generated arithmetic word problems (question/answer format)")


def _corpora_present() -> bool:
    files = [CORPORA / "gsm8k" / "train.jsonl", CORPORA / "wikitext-2" / "wiki.valid.tokens",
             *(CORPORA / "gutenberg-books" / b for b in BOOKS)]
    return all(p.is_file() for p in files)


def gsm8k_qa_jsonl(source: Path, dest: Path) -> Path:
    """GSM8K's {"question", "answer"} lines as {"text": "Question: q\\nAnswer: a"} lines at `dest` (kept when
    already written)."""
    if dest.is_file():
        return dest
    lines = []
    with source.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = f"Question: {row['question'].strip()}\nAnswer: {row['answer'].strip()}"
            except (ValueError, KeyError, AttributeError, TypeError) as e:
                raise DataError(f"{source}:{n}: not a GSM8K line with question and answer ({e})") from None
            lines.append(json.dumps({"text": text}))
    return _write_lines(dest, lines)


_NAMES = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jon", "Kai", "Lena", "Maya", "Noah")
_THINGS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "stamps", "coins", "cards")


def arithmetic_question(rng: random.Random) -> str:
    """One GSM8K-style word problem with a worked answer ending in "#### n" (two or three steps)."""
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 12), rng.randint(2, 15)
    kind = rng.randrange(4)
    if kind == 0:
        total = a + b * c
        q = (f"{name} has {a} {thing}. {name} buys {b} packs with {c} {thing} in each pack. "
             f"How many {thing} does {name} have now?")
        steps = [f"The packs hold {b} * {c} = {b * c} {thing}.", f"{name} has {a} + {b * c} = {total} {thing}."]
    elif kind == 1:
        start = a + b * c
        total = start - b * c
        q = (f"{name} had {start} {thing} and gave {c} {thing} to each of {b} friends. "
             f"How many {thing} are left?")
        steps = [f"{name} gave away {b} * {c} = {b * c} {thing}.", f"{start} - {b * c} = {total} {thing} are left."]
    elif kind == 2:
        total = a * b * c
        q = f"A box holds {a} {thing}. A crate holds {b} boxes. How many {thing} are in {c} crates?"
        steps = [f"A crate holds {a} * {b} = {a * b} {thing}.", f"{c} crates hold {a * b} * {c} = {total} {thing}."]
    else:
        per = a
        whole = per * b
        total = whole + c
        q = (f"{name} shares some {thing} equally among {b} friends, and each friend gets {per}. "
             f"{c} {thing} are left over. How many {thing} did {name} start with?")
        steps = [f"The friends got {per} * {b} = {whole} {thing}.", f"{name} started with {whole} + {c} = {total} {thing}."]
    return f"Question: {q}\nAnswer: " + "\n".join(steps) + f"\n#### {total}"


def arithmetic_qa_jsonl(dest: Path, n: int, *, seed: int = 0) -> Path:
    """`n` generated word problems as {"text": ...} lines at `dest` (the same for the same n and seed; kept
    when already written)."""
    if dest.is_file():
        return dest
    rng = random.Random(seed)
    return _write_lines(dest, [json.dumps({"text": arithmetic_question(rng)}) for _ in range(n)])


def _write_lines(dest: Path, lines: list[str]) -> Path:
    from pretrainlab.io_atomic import write_text_atomic

    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, "\n".join(lines) + "\n")
    return dest


def _prepare(path: Path, sources: list[dict[str, Any]]) -> Path:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    if (path / "manifest.json").is_file():
        return path
    cfg = validate(PrepareConfig, {"sources": sources, "tokenizer": {"kind": "bytes"},
                                   "validation": {"fraction": 0.05}, "output": str(path), "overwrite": True},
                   source="curriculum replication data")
    return Path(prepare(cfg, progress=False))
