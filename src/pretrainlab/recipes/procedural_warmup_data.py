"""The data of the procedural-warmup replication: one prepared folder (byte tokens) with a natural-text
domain and two procedural ones, and the natural-text validation curve read back from a run.

Domains: `natural` (TinyStories when `../shared/data/corpora` holds it, else WikiText-2's validation file,
else the built-in stdlib corpus, Python source), `dyck` (k-Dyck strings, `data/procedural/dyck.py`) and
`dyck_shuffled` (the same strings with their symbols permuted: the paper's shuffled-token control).
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainlab.errors import DataError
from pretrainlab.science.corpora import CORPORA

DOMAINS = ("natural", "dyck", "dyck_shuffled")


@dataclass(frozen=True)
class WarmupData:
    path: Path
    origin: str  # where the natural text came from, for the notes
    filler: str  # the needle task's filler: a natural text file the runs never train on, or "generated"


def natural_source() -> tuple[dict[str, Any], str, str]:
    """(source config, description, needle filler) of the natural text: TinyStories, else WikiText-2,
    else the stdlib."""
    stories = CORPORA / "tinystories" / "tinystories_train_first2MiB.txt"
    stories_val = CORPORA / "tinystories" / "tinystories_val.txt"
    if stories.is_file():
        source = {"type": "text", "domain": "natural", "paths": [stories.as_posix()], "split": "separator",
                  "separator": "<|endoftext|>"}
        filler = stories_val.as_posix() if stories_val.is_file() else "generated"
        return source, f"TinyStories (first 2 MiB of the train split, {stories})", filler
    wiki = CORPORA / "wikitext-2" / "wiki.valid.tokens"
    if wiki.is_file():
        return ({"type": "text", "domain": "natural", "paths": [wiki.as_posix()], "split": "blank_lines"},
                f"WikiText-2 (validation file, {wiki})", "generated")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return ({"type": "stdlib", "domain": "natural"}, f"the built-in stdlib corpus (Python source, {stdlib})",
            "generated")


def dyck_sources(k: int, max_depth: int, max_length: int, documents: int) -> list[dict[str, Any]]:
    """The warm-up domain and its shuffled-token control: the same strings (same seed), symbols permuted."""
    options = {"k": k, "max_depth": max_depth, "min_length": max_length // 4, "max_length": max_length,
               "separator": ""}
    return [
        {"type": "procedural", "domain": "dyck", "generator": "dyck", "documents": documents, "seed": 0,
         "options": options},
        {"type": "procedural", "domain": "dyck_shuffled", "generator": "dyck", "documents": documents, "seed": 0,
         "options": {**options, "shuffle_tokens": True}},
    ]


def prepare_warmup_data(out: Path, data: Path | None, *, k: int, max_depth: int, max_length: int,
                        documents: int) -> WarmupData:
    """`data` (a prepared folder that must hold the three domains), else a folder prepared under `out`
    (reused when it is already there)."""
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare
    from pretrainlab.data.prepared import PreparedData

    if data is not None:
        missing = [d for d in DOMAINS if d not in PreparedData(data).domains]
        if missing:
            raise DataError(f"--data {data}: the procedural-warmup replication needs the domains "
                            f"{', '.join(DOMAINS)}; missing {', '.join(missing)}",
                            hint="prepare natural text as domain `natural` with procedural sources `dyck` and "
                            "`dyck_shuffled` (see docs/procedural.md), or leave --data out")
        return WarmupData(Path(data), f"--data {data}", "generated")
    source, origin, filler = natural_source()
    path = Path(out) / "data" / f"procedural-warmup-k{k}-d{max_depth}-L{max_length}-n{documents}"
    if not (path / "manifest.json").is_file():
        cfg = validate(PrepareConfig, {
            "sources": [source, *dyck_sources(k, max_depth, max_length, documents)],
            "tokenizer": {"kind": "bytes"},
            "validation": {"fraction": 0.03},
            "output": str(path),
            "overwrite": True,
        }, source="replication data")
        prepare(cfg, progress=False)
    return WarmupData(path, origin, filler)


def natural_curve(run_dir: Path, offset_tokens: int) -> list[tuple[float, float]]:
    """(natural tokens, val_loss/natural) of a run's evaluations from the start of its natural stage on:
    training tokens minus the `offset_tokens` of a warm-up stage before it."""
    from pretrainlab.train.metrics import read_metrics

    out: dict[float, float] = {}
    for r in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if not isinstance(r, dict) or "val_loss/natural" not in r or r.get("event") not in (None, "end"):
            continue
        seen = float(r["tokens"]) - offset_tokens
        if seen >= 0:
            out[seen] = float(r["val_loss/natural"])
    return sorted(out.items())


def tokens_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first natural-token count at which the curve (linear between evaluations) is at or below
    `target`; None when it never gets there."""
    for i, (t, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return t
            t0, l0 = curve[i - 1]
            return t0 + (t - t0) * (l0 - target) / (l0 - loss)
    return None


def loss_at(curve: list[tuple[float, float]], tokens: float) -> float | None:
    """The curve's loss at `tokens` (linear between evaluations); None outside the curve."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if t0 <= tokens <= t1:
            return l0 + (l1 - l0) * (tokens - t0) / (t1 - t0) if t1 > t0 else l1
    return curve[-1][1] if curve and tokens == curve[-1][0] else None
