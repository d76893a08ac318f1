"""`pretrainlab synthesize`: sequence-level distillation data, sampled from a teacher or an ensemble.

Kim et al. (2025, *Pre-training under infinite compute*, arXiv 2509.14786) distil an ensemble into one
student by sampling token sequences from the teacher unconditionally at temperature 1 (from the averaged
logits of an ensemble) and training the student from scratch on a mix of real and synthetic batches.
`synthesize` writes that mix as a NEW prepared-data folder:

    <out>/manifest.json          the base manifest + the synthetic domain + a "synthetic" record (below)
    <out>/tokenizer.json         copied from the base (absent for the byte tokenizer)
    <out>/<base domain>/...      every shard of the base data, hard-linked (copied where links fail)
    <out>/<domain>/train.*       the samples: every sampled token, as documents ending with end-of-text
    <out>/<domain>/val.*         empty (held-out text stays real)

Each of `streams` streams starts after an end-of-text and runs on from document to document
(`sampling.iter_sample_streams`: past the teachers' context they see a sliding window of the stream's
latest tokens), so a document may be longer than a row. Sampling takes exactly ceil(tokens / (streams *
seq_len)) pieces of `seq_len` tokens per stream: the tokens sampled are the smallest multiple of
`streams * seq_len` that is at least `tokens`. EVERY sampled token is written: the documents in the order
they finish (each ending with the end-of-text the teacher sampled), then, stream by stream, the stream's
unfinished last document (when it has tokens) closed with ONE appended end-of-text. So at most `streams`
tokens are added (e.g. at most 64 in 327,680 sampled, 0.02%) and nothing sampled is thrown away: teachers trained on
long documents finish few of them, and a rule that kept only finished documents sampled several times
the tokens it wrote.

The manifest's "synthetic" maps each synthetic domain to its teachers (run folders and checkpoints),
the sampling settings, the token counts (asked, sampled, written, end-of-text appended), the base data
(path, fingerprint) and the teacher cost (`wall_s`, `tokens_per_s` of sampling, device); being part of the
manifest, it is part of the fingerprint, so every synthesis is its own data. A student then trains on
the folder with e.g. `data.weights={synthetic: 3, code: 1}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.prepared import PreparedData, fingerprint_of
from pretrainlab.data.shards import SPLITS, ShardWriter, shard_paths
from pretrainlab.errors import ConfigError, DataError

COMBINES = ("logits", "probs")


def synthesize(
    teachers: list[str | Path],
    *,
    tokens: int,
    out: str | Path,
    data: str | Path | None = None,
    domain: str = "synthetic",
    combine: str = "logits",
    temperature: float = 1.0,
    seq_len: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> Path:
    """Sample documents from `teachers` (one run folder, several sampled as an ensemble, or a folder with
    an ensemble.json) and write the base data (`data`, default the first teacher's) plus the domain
    `domain`, holding about `tokens` tokens, into the new prepared-data folder `out`; return its path.

    `seq_len` (default: the teachers' training length, at most their max_seq_len) is the teachers'
    context window while sampling and the tokens each stream samples per piece. `min(batch_size,
    ceil(tokens / seq_len))` streams are sampled at once (every stream samples at least one piece), for
    `pieces_needed(tokens, streams, seq_len)` pieces; the domain holds every sampled token plus one
    end-of-text per stream whose last document was unfinished (see the module docstring). Raises
    ConfigError / DataError before any sampling for bad settings, an existing `out` (without
    `overwrite`), `out` equal to the base data or a teacher's data, or a domain name the base already has.
    """
    from pretrainlab.data.prepare import _publish, _remove, _remove_stale_temps
    from pretrainlab.eval.members import expand_members, load_members
    from pretrainlab.science.sampling import iter_sample_streams
    from pretrainlab.train.checkpoint import find_latest_checkpoint
    from pretrainlab.train.distributed import resolve_device
    from pretrainlab.train.precision import autocast_dtype, precision_name

    _check_settings(tokens=tokens, domain=domain, combine=combine, temperature=temperature, seq_len=seq_len,
                    batch_size=batch_size)
    out = Path(out)
    _check_out(out, overwrite)
    dev = resolve_device(device)
    dtype = autocast_dtype(precision, dev)
    runs = expand_members(list(teachers))
    models, configs, base = load_members(list(teachers), data=data, device=dev)
    _check_paths(out, base, [Path(c.data.path) for c in configs])
    if domain in base.domains:
        raise ConfigError(
            f"domain {domain!r} is already in the base data {base.path} (it has: {', '.join(base.domains)})",
            hint="name the synthetic domain something else, e.g. --domain synthetic2",
        )
    seq_len = seq_len or min(c.data.seq_len for c in configs)
    streams = min(batch_size, -(-tokens // seq_len))  # every stream samples at least one piece
    n_pieces = pieces_needed(tokens, streams, seq_len)

    pieces = iter_sample_streams(  # checks the settings against the teachers before anything is written
        models, streams=streams, piece_len=seq_len, window=seq_len, temperature=temperature,
        combine=combine, seed=seed, device=dev, eot_id=base.eot_id, pad_id=base.pad_id,  # type: ignore[arg-type]
        vocab_size=base.vocab_size, autocast_dtype=dtype,
    )
    _remove_stale_temps(out)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        with _Progress(progress, n_pieces * streams * seq_len) as bar:
            written = _write_samples(tmp, base, domain, pieces, n_pieces, bar.update)
        record: dict[str, Any] = {
            "teachers": [str(r) for r in runs],
            "checkpoints": [str(find_latest_checkpoint(r, warn=lambda _: None)) for r in runs],
            "combine": combine,
            "temperature": temperature,
            "seed": seed,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "streams": streams,
            "tokens_requested": tokens,
            "tokens_sampled": written.sampled,
            "tokens": written.entry["tokens"],  # written: the sampled tokens + the appended end-of-text
            "documents": written.entry["documents"],
            "appended_eot": written.appended_eot,  # unfinished last documents closed with one end-of-text
            "base": {"path": str(base.path), "fingerprint": base.fingerprint},
            "teacher_cost": {
                "wall_s": round(written.sample_s, 3),
                "tokens_per_s": round(written.sampled / max(written.sample_s, 1e-9), 1),
                "device": str(dev),
                "precision": precision_name(dtype),
                "members": len(models),
            },
        }
        manifest = _write_folder(tmp, base, domain, written.entry, record)
        _publish(tmp, out, overwrite)
    except BaseException:
        _remove(tmp)
        raise
    cost = record["teacher_cost"]
    print(
        f"synthesized {record['tokens']:,} tokens in {record['documents']:,} documents (asked for {tokens:,}) "
        f"from {len(models)} teacher{'s' if len(models) > 1 else ''}: sampled {written.sampled:,} tokens in "
        f"{streams:,} stream{'s' if streams > 1 else ''} of {n_pieces:,} x {seq_len:,} tokens "
        f"in {cost['wall_s']:.1f} s "
        f"({cost['tokens_per_s']:,.0f} tokens/s on {dev}), all written; {written.appended_eot:,} unfinished "
        f"last document{'s' if written.appended_eot != 1 else ''} closed with an appended end-of-text\n"
        f"wrote {out}: {', '.join(base.domains)} + {domain} (fingerprint {manifest['fingerprint'][:16]})"
    )
    return out


def pieces_needed(tokens: int, streams: int, seq_len: int) -> int:
    """Pieces of `seq_len` tokens per stream to sample for about `tokens` tokens: ceil(tokens / (streams *
    seq_len)), so the sampled count is the smallest multiple of `streams * seq_len` that is >= `tokens`."""
    return -(-tokens // (streams * seq_len))


def finished_documents(
    pending: list[np.ndarray], piece: np.ndarray, *, eot_id: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(flat tokens, lengths) of the documents that `piece` finishes, and the new unfinished remainders.

    `pending[i]` holds stream i's unfinished document so far; `piece[i]` continues it. Each stream's
    tokens up to and including its last end-of-text become documents (each ending with its end-of-text,
    stream by stream in order); the tokens after it are the stream's new `pending`. No token is added.
    """
    parts: list[np.ndarray] = []
    left: list[np.ndarray] = []
    for before, row in zip(pending, piece):
        ends = np.flatnonzero(row == eot_id)
        if ends.size == 0:
            left.append(np.concatenate([before, row]))
            continue
        cut = int(ends[-1]) + 1
        parts.append(np.concatenate([before, row[:cut]]))
        left.append(row[cut:].copy())
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(flat == eot_id) + 1
    return flat, np.diff(ends, prepend=0), left


def document_bytes(base: PreparedData, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """UTF-8 bytes of each document's text (its end-of-text left out), so bits-per-byte stay exact: for the
    byte tokenizer the byte tokens themselves, otherwise the length of the decoded text."""
    starts = np.cumsum(lengths) - lengths
    if base.manifest["tokenizer"].get("kind") == "bytes":
        return np.add.reduceat((flat < 256).astype(np.int64), starts) if flat.size else np.zeros(0, np.int64)
    tok = base.tokenizer
    return np.array(
        [len(tok.decode(flat[s : s + n - 1]).encode("utf-8")) for s, n in zip(starts.tolist(), lengths.tolist())],
        dtype=np.int64,
    )


@dataclass
class _Written:
    entry: dict[str, Any]  # the train split's manifest entry
    sampled: int  # tokens sampled, all written
    appended_eot: int  # streams whose unfinished last document was closed with one appended end-of-text
    sample_s: float  # seconds spent sampling (the teacher cost), writing left out


def _write_samples(
    tmp: Path,
    base: PreparedData,
    domain: str,
    pieces: Generator[np.ndarray, None, None],
    n_pieces: int,
    on_tokens: Callable[[int], None],
) -> _Written:
    """Sample `n_pieces` pieces and write every token into the domain's train shard: the documents as they
    finish, then each stream's unfinished tail (when non-empty) closed with one appended end-of-text."""
    pending: list[np.ndarray] = []
    sampled, sample_s = 0, 0.0
    with ShardWriter(tmp, domain, "train", base.dtype) as w, contextlib.closing(pieces):
        for i in range(n_pieces):
            tick = time.perf_counter()
            piece = next(pieces)
            sample_s += time.perf_counter() - tick
            if i == 0:
                pending = [np.zeros(0, dtype=np.int64) for _ in range(len(piece))]
            sampled += piece.size
            flat, lengths, pending = finished_documents(pending, piece, eot_id=base.eot_id)
            if flat.size:
                w.write(flat, lengths, document_bytes(base, flat, lengths))
            on_tokens(sampled)
        tails = [np.append(p, base.eot_id) for p in pending if p.size]
        if tails:
            flat, lengths = np.concatenate(tails), np.array([t.size for t in tails], dtype=np.int64)
            w.write(flat, lengths, document_bytes(base, flat, lengths))
    entry = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
    return _Written(entry, sampled, len(tails), sample_s)


def _write_folder(
    tmp: Path, base: PreparedData, domain: str, train: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    """Link the base shards, copy the tokenizer, write the empty val shard and the manifest (last)."""
    for name in base.domains:
        for split in SPLITS:
            for src in shard_paths(base.path, name, split):
                _link_or_copy(src, tmp / name / src.name)
    if (base.path / "tokenizer.json").is_file():
        shutil.copy2(base.path / "tokenizer.json", tmp / "tokenizer.json")
    with ShardWriter(tmp, domain, "val", base.dtype) as w:
        pass
    val = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
    entry = {"train": train, "val": val, "skipped_empty": 0, "invalid_utf8_documents": 0, "bad_lines": 0,
             "sources": []}
    manifest = json.loads(json.dumps(base.manifest))
    manifest["domains"][domain] = entry
    manifest.setdefault("synthetic", {})[domain] = record
    manifest.setdefault("timing", {})[domain] = record["teacher_cost"]["wall_s"]
    manifest["fingerprint"] = fingerprint_of(manifest)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise DataError(f"{src} is missing from the base data", hint="prepare the base data again")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _check_settings(
    *, tokens: int, domain: str, combine: str, temperature: float, seq_len: int | None, batch_size: int
) -> None:
    if not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"--tokens must be a whole number >= 1 (got {tokens!r})", hint="e.g. --tokens 1000000")
    if not domain or not all(c.isalnum() or c in "-_" for c in domain):
        raise ConfigError(
            f"--domain {domain!r}: a domain is a name of letters, digits, '-' and '_' (it becomes a folder name)",
            hint="e.g. --domain synthetic",
        )
    if combine not in COMBINES:
        raise ConfigError(f"--combine {combine!r} is not one of {', '.join(COMBINES)}", hint="logits (Kim et al.)")
    if not (0 <= temperature < math.inf):
        raise ConfigError(f"--temperature must be a finite number >= 0 (got {temperature})", hint="1.0 (Kim et al.)")
    if seq_len is not None and seq_len < 1:
        raise ConfigError(f"--seq-len must be >= 1 (got {seq_len})", hint="leave it out for the teachers' seq_len")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})", hint="e.g. --batch-size 64")


def _check_out(out: Path, overwrite: bool) -> None:
    """Like `prepare`: an existing output needs `overwrite`, and only a prepared-data folder is replaced."""
    from pretrainlab.data.prepare import _exists, _is_replaceable

    if _exists(out) and not overwrite:
        raise DataError(
            f"the output folder {str(out)!r} already exists",
            hint="choose another --out, or pass --overwrite to replace it once the new data is complete",
        )
    if _exists(out) and not _is_replaceable(out):
        raise DataError(
            f"the output folder {str(out)!r} exists and is not a prepared-data folder; refusing to replace it",
            hint="choose another --out",
        )


def _check_paths(out: Path, base: PreparedData, teacher_data: list[Path]) -> None:
    """The new folder may not be (or sit inside) the base data, nor replace a teacher's training data."""
    target = out.resolve()
    base_path = base.path.resolve()
    if target == base_path or base_path in target.parents:
        raise DataError(
            f"--out {str(out)!r} is the base data folder {base.path} (or inside it)",
            hint="write the synthetic data to a new folder; the base data is linked into it, not changed",
        )
    for path in teacher_data:
        if target == path.resolve():
            raise DataError(
                f"--out {str(out)!r} is a teacher's training data ({path}): replacing it would change that data",
                hint="write the synthetic data to a new folder",
            )


class _Progress:
    """A progress bar of the tokens sampled, on stderr while sampling (only on a terminal)."""

    def __init__(self, enabled: bool, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(file=sys.stderr)
        self._bar = Progress(TextColumn("[bold]synthesize[/] tokens sampled"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=console, transient=True,
                             disable=not (enabled and console.is_terminal))
        self._task = self._bar.add_task("tokens", total=total)

    def update(self, done: int) -> None:
        self._bar.update(self._task, completed=done)

    def __enter__(self) -> "_Progress":
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def synthesize_from_cli(args: argparse.Namespace) -> int:
    """`pretrainlab synthesize TEACHER... --tokens N --out PREPARED`: see `synthesize`."""
    synthesize(
        args.teachers,
        tokens=args.tokens,
        out=args.out,
        data=args.data,
        domain=args.domain,
        combine=args.combine,
        temperature=args.temperature,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        device=args.device,
        precision=args.precision,
    )
    return 0
