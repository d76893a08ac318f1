"""`pretrainlab prepare`: sources -> tokenizer -> token shards + manifest, in one streaming pass.

A reader thread walks the sources (reading, hashing, decoding, splitting, assigning validation) and hands
batches of about `batch_bytes` of text through a bounded queue to the main thread, which encodes them
with the multi-threaded `tokenizers` core and appends them to one shard per (domain, split). So reading
overlaps encoding, and memory is bounded by a few batches whatever the corpus size.

With `filters` configured, a filter pass runs first (data/filters/chain.py): the chain sees every document
in source order, before the validation split, and decides which are removed; the tokenizer's training
sample and the tokenizing pass then skip those. So the tokenizer is trained on filtered text, and stateful
filters (near-duplicate removal) see the documents in one fixed order whatever the sample interleaving.
The chain's statistics go to manifest["filters"], every removed document's id to `removed.jsonl`.

Everything is written to a sibling `<output>.tmp-<pid>` folder, manifest last, and renamed into place only
when complete: an interrupted prepare never leaves a folder that looks finished.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.config import PrepareConfig
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.data.filters.chain import FilterChain
from pretrainlab.data.prepared import MANIFEST_FORMAT, fingerprint_of
from pretrainlab.data.shards import SPLITS, ShardWriter, token_dtype
from pretrainlab.data.sources import Document, Source, open_source
from pretrainlab.data.split import ValidationSplit
from pretrainlab.data.summary import make_progress, print_summary
from pretrainlab.data.tokenizer import TextTokenizer
from pretrainlab.errors import DataError

QUEUE_BATCHES = 2
REMOVED_FILE = "removed.jsonl"
# Whether a document survives the filters: (source, document) -> keep. None: no filters configured.
Keep = Callable[[Source, Document], bool] | None
# Settings that say where the output goes, not what is in it: kept out of the recorded config so that
# the same data prepared twice (or into another folder) has the same fingerprint.
_NOT_RECORDED = ("output", "overwrite")


def prepare(cfg: PrepareConfig, *, progress: bool = True) -> Path:
    """Tokenize `cfg.sources` into the prepared-data folder `cfg.output` and return its path.

    Raises DataError (before doing any work where possible) for missing inputs, an existing output
    without `overwrite=true`, unreadable files, a bad tokenizer, and sources with no documents.
    """
    output = Path(cfg.output)
    if _exists(output) and not cfg.overwrite:
        raise DataError(
            f"the output folder {str(output)!r} already exists",
            hint="choose another output, or set overwrite=true to replace it once the new data is complete",
        )
    if _exists(output) and not _is_replaceable(output):
        raise DataError(
            f"the output folder {str(output)!r} exists and is not a prepared-data folder (no manifest.json); "
            "refusing to replace it even with overwrite=true",
            hint="choose another output folder",
        )
    _remove_stale_temps(output)
    sources = [open_source(s, i) for i, s in enumerate(cfg.sources)]
    _refuse_output_among_sources(output, sources)
    chain = FilterChain(cfg.filters, [s.domain for s in sources])
    splitter = ValidationSplit(cfg.validation)
    tmp = output.parent / f"{output.name}.tmp-{os.getpid()}"
    if _exists(tmp):
        _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        keep = _filter_pass(cfg, sources, splitter, chain, progress) if chain else None
        tokenizer = _build_tokenizer(cfg, sources, splitter, keep)
        diag = Diagnostics(strict=cfg.strict)
        stats = _tokenize_all(cfg, sources, splitter, tokenizer, diag, tmp, progress, keep)
        tokenizer.save(tmp)
        manifest = _manifest(cfg, sources, tokenizer, diag, stats)
        if chain:
            manifest["filters"] = chain.manifest_entry()
            manifest["fingerprint"] = fingerprint_of(manifest)
            _write_removed(tmp / REMOVED_FILE, chain)
        _warn_about_split(cfg, manifest, splitter, diag)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _publish(tmp, output, cfg.overwrite)
    except BaseException:
        _remove(tmp)
        raise
    print_summary(manifest, diag.warnings(), str(output), filter_seconds=[s.seconds for s in chain.stats])
    return output


# ---------------------------------------------------------------------------------------------
# Documents: empty ones skipped, max_documents applied, validation decided
# ---------------------------------------------------------------------------------------------


def _kept_documents(
    source: Source, diag: Diagnostics, splitter: ValidationSplit, *, require_some: bool, keep: Keep = None
) -> Iterator[tuple[Document, bool]]:
    """(document, goes_to_val) for every non-empty document of `source` that `keep` keeps, up to
    `max_documents` (which counts the documents kept)."""
    kept = 0
    limit = source.cfg.max_documents
    for doc in source.documents(diag):
        if not doc.text.strip():
            diag.empty_document(source.domain)
            continue
        doc = _without_surrogates(doc, source.domain, diag)
        if keep is not None and not keep(source, doc):
            continue
        yield doc, splitter.is_val(source.domain, doc.file, doc.index)
        kept += 1
        if limit is not None and kept >= limit:
            break
    if require_some and kept == 0:
        raise DataError(
            f"{source.describe()} yielded no documents from {source.paths_text()} "
            f"({diag.skipped_empty[source.domain]} empty documents, {diag.bad_lines[source.domain]} bad lines in its domain)",
            hint="check that the files hold text (and, for JSONL/Parquet, that text_field names the text)",
        )


def _training_sample(
    cfg: PrepareConfig, sources: list[Source], splitter: ValidationSplit, keep: Keep = None
) -> Iterator[str]:
    """The first `train_sample_bytes` of training text, spread over the sources: the next document always
    comes from the source that has contributed the fewest bytes so far, so a small domain is not drowned."""
    budget = cfg.tokenizer.train_sample_bytes
    diag = Diagnostics(strict=cfg.strict)  # warnings are reported by the full pass
    streams = [_kept_documents(s, diag, splitter, require_some=False, keep=keep) for s in sources]
    taken = [0] * len(streams)
    active = set(range(len(streams)))
    total = 0
    try:
        while active and total < budget:
            i = min(active, key=lambda j: (taken[j], j))
            try:
                doc, is_val = next(streams[i])
            except StopIteration:
                active.discard(i)
                continue
            if is_val:
                continue
            text = doc.text[: budget - total]
            n = len(text.encode("utf-8"))
            taken[i] += n
            total += n
            yield text
    finally:
        for s in streams:
            s.close()


def _build_tokenizer(cfg: PrepareConfig, sources: list[Source], splitter: ValidationSplit, keep: Keep) -> TextTokenizer:
    sample = _training_sample(cfg, sources, splitter, keep) if cfg.tokenizer.kind == "bpe" else None
    return TextTokenizer.from_config(cfg.tokenizer, sample)


def _filter_pass(
    cfg: PrepareConfig, sources: list[Source], splitter: ValidationSplit, chain: FilterChain, progress: bool
) -> Keep:
    """Run the filter chain over every document in source order; return the predicate the later passes use.

    DataError when the filters remove every document of a source (naming its domain and the filters)."""
    chain.reset()
    diag = Diagnostics(strict=cfg.strict)  # warnings are reported by the full pass
    with make_progress(progress) as bar:
        task = bar.add_task("filtering", total=sum(s.total_bytes() for s in sources) or None)
        for source in sources:
            before = len(chain.removed)

            def check(src: Source, doc: Document) -> bool:
                bar.advance(task, len(doc.text))
                return chain.check(src.domain, doc.text, source=src.index, file=doc.file.display, index=doc.index)

            kept = sum(1 for _ in _kept_documents(source, diag, splitter, require_some=False, keep=check))
            if kept == 0 and len(chain.removed) > before:
                raise DataError(
                    f"the filters removed every document of domain {source.domain!r} from {source.describe()}: "
                    + chain.removed_by(source.domain),
                    hint="loosen that filter's options, limit it to other domains (filters.<i>.domains), or drop it",
                )
    removed = {(r.source, r.file, r.index) for r in chain.removed}
    return lambda source, doc: (source.index, doc.file.display, doc.index) not in removed


def _write_removed(path: Path, chain: FilterChain) -> None:
    names = chain.names
    with path.open("w", encoding="utf-8") as f:
        for r in chain.removed:
            f.write(json.dumps(r.as_dict(names), sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# The streaming pass: reader thread -> bounded queue -> encode -> shards
# ---------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    texts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    doc_bytes: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    n_bytes: int = 0

    def add(self, key: tuple[str, str], text: str) -> None:
        n = len(text.encode("utf-8"))
        self.texts.setdefault(key, []).append(text)
        self.doc_bytes.setdefault(key, []).append(n)
        self.n_bytes += n


def _batches(
    cfg: PrepareConfig, sources: list[Source], splitter: ValidationSplit, diag: Diagnostics, keep: Keep
) -> Iterator[_Batch]:
    batch = _Batch()
    for source in sources:
        for doc, is_val in _kept_documents(source, diag, splitter, require_some=True, keep=keep):
            batch.add((source.domain, "val" if is_val else "train"), doc.text)
            if batch.n_bytes >= cfg.batch_bytes:
                yield batch
                batch = _Batch()
    if batch.n_bytes:
        yield batch


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class _ReaderThread:
    """Runs a batch generator in a thread, handing batches over a bounded queue; re-raises its errors."""

    def __init__(self, produce: Callable[[], Iterator[_Batch]], maxsize: int = QUEUE_BATCHES) -> None:
        self._produce = produce
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pretrainlab-prepare-reader", daemon=True)

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(_Failure(e))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_Batch]:
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


@dataclass
class _Stats:
    writers: dict[tuple[str, str], ShardWriter]
    seconds: dict[str, float]


def _tokenize_all(
    cfg: PrepareConfig,
    sources: list[Source],
    splitter: ValidationSplit,
    tokenizer: TextTokenizer,
    diag: Diagnostics,
    folder: Path,
    progress: bool,
    keep: Keep = None,
) -> _Stats:
    dtype = token_dtype(tokenizer.vocab_size)
    domains = list(dict.fromkeys(s.domain for s in sources))
    writers = {(d, split): ShardWriter(folder, d, split, dtype) for d in domains for split in SPLITS}
    seconds = {d: 0.0 for d in domains}
    reader = _ReaderThread(lambda: _batches(cfg, sources, splitter, diag, keep))
    try:
        with make_progress(progress) as bar:
            task = bar.add_task("tokenizing", total=sum(s.total_bytes() for s in sources) or None)
            last = time.perf_counter()
            for batch in reader:
                _write_batch(batch, tokenizer, dtype, writers)
                now = time.perf_counter()
                for (domain, _), sizes in batch.doc_bytes.items():
                    seconds[domain] += (now - last) * sum(sizes) / batch.n_bytes
                last = now
                bar.advance(task, batch.n_bytes)
    finally:
        reader.close()
        for w in writers.values():
            w.close()
    return _Stats(writers, seconds)


def _write_batch(
    batch: _Batch, tokenizer: TextTokenizer, dtype: np.dtype, writers: dict[tuple[str, str], ShardWriter]
) -> None:
    keys = list(batch.texts)
    texts = [t for k in keys for t in batch.texts[k]]
    arrays = tokenizer.encode_batch(texts)
    start = 0
    for key in keys:
        n = len(batch.texts[key])
        docs = arrays[start : start + n]
        start += n
        sizes = np.fromiter((a.size for a in docs), dtype=np.int64, count=n)
        flat = np.concatenate(docs) if docs else np.zeros(0, dtype=np.uint32)
        if flat.size and int(flat.max()) >= tokenizer.vocab_size:
            raise DataError(
                f"{tokenizer.origin} produced token id {int(flat.max())}, beyond its vocabulary size "
                f"{tokenizer.vocab_size} (shards are {dtype.name}, max id {np.iinfo(dtype).max})",
                hint="the tokenizer.json is inconsistent (ids outside its vocabulary): fix or replace it",
            )
        tokens = np.insert(flat.astype(dtype, copy=False), np.cumsum(sizes), tokenizer.eot_id)
        writers[key].write(tokens, sizes + 1, np.asarray(batch.doc_bytes[key], dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Manifest, warnings, publishing
# ---------------------------------------------------------------------------------------------


def _manifest(
    cfg: PrepareConfig, sources: list[Source], tokenizer: TextTokenizer, diag: Diagnostics, stats: _Stats
) -> dict[str, Any]:
    domains: dict[str, Any] = {}
    for domain in stats.seconds:
        entry: dict[str, Any] = {}
        for split in SPLITS:
            w = stats.writers[(domain, split)]
            entry[split] = {"documents": w.n_docs, "tokens": w.n_tokens, "bytes": w.n_bytes, "sha256": w.sha256}
        entry["skipped_empty"] = diag.skipped_empty[domain]
        entry["invalid_utf8_documents"] = diag.invalid_utf8_documents[domain]
        entry["bad_lines"] = diag.bad_lines[domain]
        entry["sources"] = [r.as_dict() for s in sources if s.domain == domain for r in s.records]
        domains[domain] = entry
    config = cfg.model_dump(mode="json")
    for key in _NOT_RECORDED:
        config.pop(key, None)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tokenizer": tokenizer.manifest_entry(),
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "domains": domains,
        "timing": {d: round(s, 3) for d, s in stats.seconds.items()},
        "config": config,
    }
    manifest["fingerprint"] = fingerprint_of(manifest)
    return manifest


def _warn_about_split(cfg: PrepareConfig, manifest: dict[str, Any], splitter: ValidationSplit, diag: Diagnostics) -> None:
    for pattern in splitter.unmatched_patterns():
        diag.note(f"validation.files pattern {pattern!r} matched none of the source files")
    if cfg.validation.fraction > 0 or cfg.validation.files:
        for domain, entry in manifest["domains"].items():
            if entry["val"]["documents"] == 0:
                diag.note(
                    f"domain {domain!r} has no validation documents ({entry['train']['documents']} train documents, "
                    f"validation.fraction={cfg.validation.fraction}): raise validation.fraction or name files in "
                    "validation.files to measure it"
                )


def _without_surrogates(doc: Document, domain: str, diag: Diagnostics) -> Document:
    """Lone surrogates (JSON allows `"\\ud800"`) cannot be encoded as UTF-8: replace them with U+FFFD
    and count them as invalid UTF-8, like undecodable bytes in a text file."""
    try:
        doc.text.encode("utf-8")
        return doc
    except UnicodeEncodeError:
        fixed = doc.text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        bad = sum(1 for a, b in zip(doc.text, fixed) if a != b)
        diag.invalid_utf8(domain, doc.file.display, bad, 1)
        return Document(fixed, doc.file, doc.index)


def _is_replaceable(output: Path) -> bool:
    """Only an earlier prepare's output (or an empty folder) may be replaced by overwrite=true."""
    if output.is_dir() and not output.is_symlink():
        return (output / "manifest.json").is_file() or not any(output.iterdir())
    return False


def _refuse_output_among_sources(output: Path, sources: list[Source]) -> None:
    """An output folder holding source files would be read as data, and replacing it would delete them."""
    out = output.resolve()
    for source in sources:
        for ref in source.files:
            if ref.path is not None and (ref.path.resolve() == out or out in ref.path.resolve().parents):
                raise DataError(
                    f"{source.describe()} reads {ref.display}, which is inside the output folder {str(output)!r}",
                    hint="write the output outside the source folders (or exclude it from the source globs)",
                )


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif _exists(p):
        p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    import psutil

    return pid != os.getpid() and psutil.pid_exists(pid)


def _remove_stale_temps(output: Path) -> None:
    """Delete `<output>.tmp-<pid>` folders left by a prepare that was killed (its process is gone)."""
    parent = output.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f"{glob.escape(output.name)}.tmp-*"):
        suffix = p.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            _remove(p)
    if _exists(output):  # a replaced folder left by a kill between the two renames of `_publish`
        for p in parent.glob(f"{glob.escape(output.name)}.old-*"):
            suffix = p.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and not _pid_alive(int(suffix)):
                _remove(p)


def _publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the complete folder into place; an old one is replaced only now, when the new one is whole."""
    if _exists(output):
        if not overwrite:
            raise DataError(f"the output folder {str(output)!r} appeared while preparing", hint="set overwrite=true")
        old = output.parent / f"{output.name}.old-{os.getpid()}"
        _remove(old)
        os.replace(output, old)
        os.replace(tmp, output)
        _remove(old)
    else:
        os.replace(tmp, output)
