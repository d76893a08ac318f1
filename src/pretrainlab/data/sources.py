"""Document sources: text files, JSON Lines, Parquet, zip archives, Hugging Face `datasets` (saved folders and
local files) and the stdlib.

Every source resolves its files up front (a missing path or a glob that matches nothing fails before any
work), then streams documents in a sorted, deterministic order, hashing each file's bytes (sha256) as it
reads them. Nothing holds more than one file (for `split=file`) or one read chunk at a time.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import glob
import hashlib
import io
import json
import os
import re
import sysconfig
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from pretrainlab.config import (
    DocumentSplit,
    HFDatasetSource,
    HFDiskSource,
    JsonlSource,
    ParquetSource,
    SourceConfig,
    StdlibSource,
    TextSource,
    ZipSource,
)
from pretrainlab.data.diagnostics import Diagnostics
from pretrainlab.errors import DataError

CHUNK_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 1024
STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class FileRef:
    """One input file: `display` names it in messages and the manifest, `rel` (relative to the source's
    base folder) keys the validation hash so that moving a corpus does not change the split."""

    display: str
    rel: str
    path: Path | None = None


@dataclass(frozen=True)
class Document:
    text: str
    file: FileRef
    index: int  # position of the document in its file


@dataclass(frozen=True)
class FileRecord:
    """A file as read, for the manifest: what was tokenized, exactly."""

    path: str
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


# ---------------------------------------------------------------------------------------------
# UTF-8 decoding that counts what it had to replace
# ---------------------------------------------------------------------------------------------

_ERRORS = "pretrainlab-count-replace"
_tls = threading.local()


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _tls.count = getattr(_tls, "count", 0) + 1
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _count_replace)


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid sequences by U+FFFD; returns (text, number of replacements)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        _tls.count = 0
        text = data.decode("utf-8", errors=_ERRORS)
        return text, _tls.count


class HashingReader:
    """Reads a binary stream in chunks, hashing the bytes and decoding them as UTF-8 incrementally."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
        self.sha256 = hashlib.sha256()
        self.n_bytes = 0
        self.utf8_errors = 0

    def text_chunks(self) -> Iterator[str]:
        while True:
            data = self._stream.read(CHUNK_BYTES)
            final = not data
            self.sha256.update(data)
            self.n_bytes += len(data)
            _tls.count = 0
            text = self._decoder.decode(data, final=final)
            self.utf8_errors += _tls.count
            if text:
                yield text
            if final:
                return

    def record(self, display: str) -> FileRecord:
        return FileRecord(display, self.sha256.hexdigest(), self.n_bytes)


def hash_file(path: Path, display: str) -> FileRecord:
    """sha256 and size of a file read in chunks (for sources whose reader is not sequential)."""
    h = hashlib.sha256()
    n = 0
    with _open_binary(path, display) as f:
        while data := f.read(CHUNK_BYTES):
            h.update(data)
            n += len(data)
    return FileRecord(display, h.hexdigest(), n)


T = TypeVar("T")


def _hash_and_open(
    ref: FileRef, opener: Callable[[Path], T], what: str, errors: tuple[type[BaseException], ...]
) -> tuple[FileRecord, T]:
    """Hash a file read by a library that does not stream sequentially, then open it with `opener`;
    a file the library cannot read is one DataError naming it."""
    assert ref.path is not None
    record = hash_file(ref.path, ref.display)
    try:
        return record, opener(ref.path)
    except errors as e:
        raise DataError(f"{ref.display}: not a readable {what} ({e})", hint="check the file") from None


def _open_binary(path: Path, display: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except PermissionError:
        raise DataError(
            f"{display}: permission denied", hint="make the file readable (chmod +r) or remove it from the source"
        ) from None
    except OSError as e:
        raise DataError(f"{display}: cannot be read ({e.strerror})", hint="check the file") from None


_DECOMPRESSORS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def open_stream(path: Path, display: str) -> IO[bytes]:
    """A file's bytes for the sequential readers (text, jsonl): `.gz`, `.bz2` and `.xz` files are decompressed
    on the fly (the recorded sha256 and size are then those of the text). A corrupt archive is a DataError
    naming the file, when it is opened or while it is read."""
    module = _DECOMPRESSORS.get(path.suffix.lower())
    if module is None:
        return _open_binary(path, display)
    import importlib

    opener = importlib.import_module(module).open
    raw = _open_binary(path, display)
    return io.BufferedReader(_CheckedStream(opener(raw), raw, display, path.suffix), buffer_size=CHUNK_BYTES)


class _CheckedStream(io.RawIOBase):
    """A decompressing stream whose read errors become one DataError naming the file."""

    def __init__(self, inner: IO[bytes], file: IO[bytes], display: str, suffix: str) -> None:
        self.inner, self.file, self.display, self.suffix = inner, file, display, suffix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self.inner.read(len(buffer))
        except (OSError, EOFError, ValueError) as e:
            raise DataError(f"{self.display}: not a readable {self.suffix} archive ({e})",
                            hint="check the file (re-download it, or decompress it and point the source at the text)") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.file.close()
            super().close()


# ---------------------------------------------------------------------------------------------
# Splitting a stream of text into documents
# ---------------------------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\r?\n(?:[^\S\n]*\n)+")
_NON_SPACE = re.compile(r"\S")


def split_documents(chunks: Iterable[str], mode: DocumentSplit, separator: str) -> Iterator[str]:
    """Documents of a text stream: the whole stream, or the pieces between separators, blank lines or
    newlines. Streams: only the unfinished last piece is kept between chunks."""
    if mode == "file":
        yield "".join(chunks)
        return
    if mode == "separator" and not separator:
        raise DataError("separator is empty", hint="set the source's separator, e.g. '<|endoftext|>'")
    sep = separator if mode == "separator" else "\n"
    buf = ""
    pending: list[str] = []  # chunks of a long document with no separator yet (joined once, not per chunk)
    tail = ""  # the end of the text held back, where a separator split across chunks would start
    scan_from = 0  # blank_lines: `buf` before this holds no blank-line run (a run is whitespace only)
    for chunk in chunks:
        if mode != "blank_lines" and sep not in tail + chunk:
            pending.append(chunk)
            tail = (tail + chunk)[-(len(sep) - 1) :] if len(sep) > 1 else ""
            continue
        buf = buf + "".join(pending) + chunk if pending else buf + chunk
        pending = []
        if mode == "blank_lines":
            start = 0
            for m in _BLANK_LINES.finditer(buf, scan_from):
                if _NON_SPACE.search(buf, m.end()) is None:  # the blank run may go on in the next chunk
                    break
                yield buf[start : m.start()]
                start = m.end()
            buf = buf[start:]
            # Rescan only from the trailing whitespace on: a long paragraph is scanned once, not per chunk.
            scan_from = len(buf.rstrip())
        else:
            pieces = buf.split(sep)
            buf = pieces.pop()
            for piece in pieces:
                yield piece[:-1] if mode == "line" and piece.endswith("\r") else piece
            tail = buf[-(len(sep) - 1) :] if len(sep) > 1 else ""
    buf += "".join(pending)
    if mode == "blank_lines":
        pieces = _BLANK_LINES.split(buf)
        if pieces and pieces[-1].endswith("\n"):
            pieces[-1] = pieces[-1].rstrip("\r\n")
        yield from (p for p in pieces if p)
    elif buf:
        yield buf[:-1] if mode == "line" and buf.endswith("\r") else buf


# ---------------------------------------------------------------------------------------------
# Resolving paths and globs
# ---------------------------------------------------------------------------------------------


def resolve_paths(patterns: list[str], where: str) -> list[FileRef]:
    """Files named by paths, folders (all files below, hidden ones excluded) and globs (`**` recurses),
    each pattern's matches sorted, duplicates dropped; DataError for a path or glob that matches nothing."""
    out: list[FileRef] = []
    seen: set[Path] = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            base = _glob_base(expanded)
            found = [Path(p) for p in glob.glob(expanded, recursive=True) if os.path.isfile(p)]
            if not found:
                raise DataError(
                    f"{where}: the glob {pattern!r} matches no files", hint="check the pattern and the current folder"
                )
        elif os.path.isdir(expanded):
            base = Path(expanded)
            found = [
                p
                for p in base.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
            ]
            if not found:
                raise DataError(f"{where}: the folder {pattern!r} holds no files", hint="check the path")
        elif os.path.exists(expanded):
            base = Path(expanded).parent
            found = [Path(expanded)]
        else:
            raise DataError(f"{where}: the path {pattern!r} does not exist", hint="check the path and the current folder")
        for p in sorted(found, key=lambda q: q.as_posix()):
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            out.append(FileRef(display=str(p), rel=p.relative_to(base).as_posix() if _is_below(p, base) else p.name, path=p))
    return out


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_below(p: Path, base: Path) -> bool:
    try:
        p.relative_to(base)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class Source:
    """A configured source: `files` resolved at construction, `documents()` streams them (fresh each call),
    `records` lists the files read by the latest full pass (for the manifest)."""

    def __init__(self, cfg: SourceConfig, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.domain = cfg.domain
        self.records: list[FileRecord] = []
        self.files: list[FileRef] = []

    def describe(self) -> str:
        return f"sources[{self.index}] ({self.cfg.type}, domain {self.domain!r})"

    def paths_text(self, limit: int = 5) -> str:
        names = [f.display for f in self.files[:limit]]
        more = f" and {len(self.files) - limit} more" if len(self.files) > limit else ""
        return ", ".join(names) + more

    def total_bytes(self) -> int:
        """Size on disk of the input (an estimate of the text to process, for the progress bar)."""
        total = 0
        for f in self.files:
            try:
                total += os.path.getsize(f.path) if f.path is not None else 0
            except OSError:
                pass
        return total

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        raise NotImplementedError


class _SplitTextSource(Source):
    """Shared by text files and the stdlib: each file is decoded and split into documents."""

    split: DocumentSplit = "file"
    separator: str = ""

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        self.records = []
        for ref in self.files:
            assert ref.path is not None
            with open_stream(ref.path, ref.display) as f:
                reader = HashingReader(f)
                yield from _documents_of_stream(reader, ref, self.split, self.separator, self.domain, diag)
            self.records.append(reader.record(ref.display))


def _documents_of_stream(
    reader: HashingReader, ref: FileRef, split: DocumentSplit, separator: str, domain: str, diag: Diagnostics
) -> Iterator[Document]:
    n_bad_docs = 0
    for i, text in enumerate(split_documents(reader.text_chunks(), split, separator)):
        if reader.utf8_errors and "\ufffd" in text:
            n_bad_docs += 1
        yield Document(text, ref, i)
    if reader.utf8_errors:
        diag.invalid_utf8(domain, ref.display, reader.utf8_errors, n_bad_docs)


class TextFilesSource(_SplitTextSource):
    def __init__(self, cfg: TextSource, index: int) -> None:
        super().__init__(cfg, index)
        self.split, self.separator = cfg.split, cfg.separator
        self.files = resolve_paths(cfg.paths, self.describe())


class StdlibFilesSource(_SplitTextSource):
    """The running interpreter's standard library `.py` files, tests and site-packages excluded."""

    def __init__(self, cfg: StdlibSource, index: int) -> None:
        super().__init__(cfg, index)
        root = Path(sysconfig.get_paths()["stdlib"])
        if not root.is_dir():
            raise DataError(f"{self.describe()}: the standard library folder {root} does not exist")
        self.files = stdlib_files(root, cfg.max_files)


def stdlib_files(root: Path, max_files: int | None = None) -> list[FileRef]:
    """The stdlib's `.py` files in sorted order, without site-packages, test folders and test_*.py."""
    found: list[FileRef] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_EXCLUDED_DIRS and not d.startswith("."))
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                p = Path(dirpath) / name
                rel = p.relative_to(root).as_posix()
                found.append(FileRef(display=f"<stdlib>/{rel}", rel=rel, path=p))
    found.sort(key=lambda r: r.rel)
    return found[:max_files] if max_files is not None else found


class JsonlFilesSource(Source):
    def __init__(self, cfg: JsonlSource, index: int) -> None:
        super().__init__(cfg, index)
        self.text_field = cfg.text_field
        self.files = resolve_paths(cfg.paths, self.describe())

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        self.records = []
        for ref in self.files:
            assert ref.path is not None
            h = hashlib.sha256()
            n_bytes = 0
            n_utf8_errors = 0
            n_utf8_docs = 0
            with open_stream(ref.path, ref.display) as f:
                for lineno, raw in enumerate(f, start=1):
                    h.update(raw)
                    n_bytes += len(raw)
                    line, errors = decode_utf8(raw)
                    if lineno == 1:
                        line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
                    if not line.strip():
                        continue
                    text = self._text_of(line, ref, lineno, diag)
                    if text is None:
                        continue
                    if errors:
                        n_utf8_errors += errors
                        n_utf8_docs += 1
                    yield Document(text, ref, lineno - 1)
            if n_utf8_errors:
                diag.invalid_utf8(self.domain, ref.display, n_utf8_errors, n_utf8_docs)
            self.records.append(FileRecord(ref.display, h.hexdigest(), n_bytes))

    def _text_of(self, line: str, ref: FileRef, lineno: int, diag: Diagnostics) -> str | None:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            diag.bad_line(self.domain, ref.display, lineno, f"not valid JSON ({e.msg} at column {e.colno})")
            return None
        if not isinstance(obj, dict):
            diag.bad_line(self.domain, ref.display, lineno, f"not a JSON object but {type(obj).__name__}")
            return None
        if self.text_field not in obj:
            keys = ", ".join(list(obj)[:8])
            diag.bad_line(self.domain, ref.display, lineno, f"no field {self.text_field!r} (it has: {keys})")
            return None
        value = obj[self.text_field]
        if not isinstance(value, str):
            diag.bad_line(self.domain, ref.display, lineno, f"field {self.text_field!r} is {type(value).__name__}, not a string")
            return None
        return value


class ParquetFilesSource(Source):
    def __init__(self, cfg: ParquetSource, index: int) -> None:
        super().__init__(cfg, index)
        self.text_field = cfg.text_field
        self.files = resolve_paths(cfg.paths, self.describe())

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        import pyarrow.parquet as pq

        self.records = []
        for ref in self.files:
            # pyarrow raises ArrowInvalid / OSError for non-Parquet input
            record, pf = _hash_and_open(ref, pq.ParquetFile, "Parquet file", (Exception,))
            columns = pf.schema_arrow.names
            if self.text_field not in columns:
                raise DataError(
                    f"{ref.display}: no column {self.text_field!r} (it has: {', '.join(columns)})",
                    hint=f"set {self.describe().split(' ')[0]}.text_field to the text column",
                )
            row = 0
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[self.text_field]):
                for value in batch.column(0).to_pylist():
                    row += 1
                    if not isinstance(value, str):
                        kind = "null" if value is None else type(value).__name__
                        diag.bad_line(self.domain, ref.display, row, f"row has {kind} in {self.text_field!r}, not a string")
                        continue
                    yield Document(value, ref, row - 1)
            self.records.append(record)


def _is_junk_member(name: str) -> bool:
    """macOS resource forks (`__MACOSX/`) and hidden files, as folders sources skip hidden files."""
    return any(part == "__MACOSX" or part.startswith(".") for part in name.split("/"))


class ZipArchivesSource(Source):
    def __init__(self, cfg: ZipSource, index: int) -> None:
        super().__init__(cfg, index)
        self.members, self.split, self.separator = cfg.members, cfg.split, cfg.separator
        self.files = resolve_paths(cfg.paths, self.describe())

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        self.records = []
        for ref in self.files:
            record, archive = _hash_and_open(ref, zipfile.ZipFile, "zip archive", (zipfile.BadZipFile, OSError))
            with archive:
                names = sorted(
                    i.filename
                    for i in archive.infolist()
                    if not i.is_dir() and fnmatch.fnmatchcase(i.filename, self.members) and not _is_junk_member(i.filename)
                )
                for name in names:
                    member = FileRef(display=f"{ref.display}/{name}", rel=f"{ref.rel}/{name}", path=None)
                    with archive.open(name) as f:
                        reader = HashingReader(f)
                        yield from _documents_of_stream(reader, member, self.split, self.separator, self.domain, diag)
            self.records.append(record)


# ---------------------------------------------------------------------------------------------
# Hugging Face `datasets`: saved folders and local files, offline, in row batches
# ---------------------------------------------------------------------------------------------

_HF_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def _import_datasets(what: str) -> Any:
    """The `datasets` module, or a DataError saying which extra to install."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{what}: reading through Hugging Face `datasets` needs the `datasets` package",
            hint="pip install pretrainlab[datasets]",
        ) from None
    return datasets


@contextlib.contextmanager
def _hf_offline(datasets: Any) -> Iterator[None]:
    """`datasets` in offline mode for the duration (its config reads the env only at import, so both are set):
    local files never need the network, and this makes sure nothing is fetched."""
    saved_env = {k: os.environ.get(k) for k in _HF_OFFLINE_ENV}
    config = getattr(datasets, "config", None)
    saved_cfg = {k: getattr(config, k) for k in _HF_OFFLINE_ENV if hasattr(config, k)}
    try:
        for k in _HF_OFFLINE_ENV:
            os.environ[k] = "1"
        for k in saved_cfg:
            setattr(config, k, True)
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in saved_cfg.items():
            setattr(config, k, v)


class _BadRows:
    """Rows of a `datasets` table whose text is not a string: counted per domain like bad lines, reported as
    `file: row N: ...` (a row number, not a line of the file: Parquet has no lines, and a JSON Lines row
    is not its line once blank lines are skipped), a few examples per file; fatal when `diag.strict`."""

    def __init__(self, diag: Diagnostics, domain: str, file: str) -> None:
        self.diag, self.domain, self.file = diag, domain, file
        self.count = 0
        self.examples: list[str] = []

    def add(self, row: int, reason: str) -> None:
        if self.diag.strict:
            raise DataError(
                f"{self.file}: row {row}: {reason}",
                hint="fix or remove that row, or set strict=false to skip bad rows with a warning",
            )
        self.diag.bad_lines[self.domain] += 1
        self.count += 1
        if len(self.examples) < 3:
            self.examples.append(f"row {row}: {reason}")

    def report(self) -> None:
        """One warning for the file (shown with prepare's other warnings)."""
        if self.count:
            more = f" (and {self.count - len(self.examples)} more)" if self.count > len(self.examples) else ""
            self.diag.note(f"{self.file}: skipped {self.count} bad row(s): {'; '.join(self.examples)}{more}")
            self.count = 0


def _documents_of_batches(
    batches: Iterator[dict[str, list[Any]]],
    ref: FileRef,
    text_field: str,
    *,
    domain: str,
    diag: Diagnostics,
    hint: str,
    read_error: Callable[[Exception], DataError],
) -> Iterator[Document]:
    """Documents of the `text_field` column of column batches (dicts of lists), one per row: a value that is
    not a string (null, a number) is skipped and counted as a bad row (`file: row N: ...`, rows counted
    from 1); a missing column is a DataError that lists the columns there are; an error of the reader
    itself becomes `read_error(e)`."""
    row = 0
    bad = _BadRows(diag, domain, ref.display)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as e:  # datasets/pyarrow raise their own types for unreadable input
                raise read_error(e) from None
            if text_field not in batch:
                raise DataError(f"{ref.display}: no column {text_field!r} (it has: {', '.join(batch)})", hint=hint)
            for value in batch[text_field]:
                row += 1
                if not isinstance(value, str):
                    kind = "null" if value is None else type(value).__name__
                    bad.add(row, f"{text_field!r} is {kind}, not a string")
                    continue
                yield Document(value, ref, row - 1)
    finally:
        bad.report()


class HFDiskDatasetSource(Source):
    """A `datasets` folder written by `save_to_disk`, read offline in row batches.

    `load_from_disk` memory-maps the Arrow files (nothing is loaded into memory up front) and the text
    column is iterated `PARQUET_BATCH_ROWS` rows at a time, so a folder larger than memory streams.
    """

    def __init__(self, cfg: HFDiskSource, index: int) -> None:
        super().__init__(cfg, index)
        self.text_field, self.split = cfg.text_field, cfg.split
        root = Path(os.path.expanduser(cfg.path))
        if not root.is_dir():
            raise DataError(f"{self.describe()}: the folder {cfg.path!r} does not exist", hint="check the path")
        self.root = root
        self.files = [
            FileRef(display=str(p), rel=p.relative_to(root).as_posix(), path=p)
            for p in sorted(root.rglob("*"), key=lambda q: q.as_posix())
            if p.is_file()
        ]

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        datasets = _import_datasets(self.describe())
        self.records = [hash_file(f.path, f.display) for f in self.files if f.path is not None]
        try:
            with _hf_offline(datasets):
                ds: Any = datasets.load_from_disk(str(self.root), keep_in_memory=False)
        except Exception as e:  # datasets raises FileNotFoundError or its own errors for a foreign folder
            raise DataError(f"{self.root}: not a `datasets` save_to_disk folder ({e})", hint="check the path") from None
        name = str(self.root)
        if isinstance(ds, datasets.DatasetDict):
            splits = sorted(ds.keys())
            split = self.split if self.split is not None else (splits[0] if len(splits) == 1 else None)
            if split is None or split not in ds:
                raise DataError(
                    f"{self.root}: holds the splits {', '.join(splits)}; "
                    + ("choose one" if self.split is None else f"not {self.split!r}"),
                    hint=f"set {self.describe().split(' ')[0]}.split",
                )
            ds = ds[split]
            name = f"{self.root}[{split}]"
        ref = FileRef(display=name, rel=self.split or "data", path=None)
        hint = f"set {self.describe().split(' ')[0]}.text_field to the text column"
        if self.text_field not in ds.column_names:
            raise DataError(f"{name}: no column {self.text_field!r} (it has: {', '.join(ds.column_names)})", hint=hint)
        batches = iter(ds.select_columns([self.text_field]).iter(batch_size=PARQUET_BATCH_ROWS))
        yield from _documents_of_batches(
            batches, ref, self.text_field, domain=self.domain, diag=diag, hint=hint,
            read_error=lambda e: DataError(f"{name}: cannot be read ({e})", hint="check the folder"),
        )


class HFFilesSource(Source):
    """Local Parquet, JSON Lines, CSV or text files read through `datasets.load_dataset(format, data_files=...)`,
    one file at a time in sorted order, offline.

    Streaming (the default) iterates each file in row batches with no Arrow cache: the builder's lock files go
    to a temporary folder removed afterwards, so nothing is written to the home folder. `streaming: false`
    builds `datasets`' usual Arrow cache (in `HF_DATASETS_CACHE`) first, then iterates it memory-mapped.
    Documents are indexed by row within their file, as the jsonl and parquet sources do, so the same file read
    either way gives the same documents and the same validation split.

    Only the text column is kept (`select_columns`, applied to each batch read). The JSON builder of
    `datasets` (checked with 5.2) has no `columns` option, so every field of a JSON Lines row is parsed before
    the text is picked out, as the native `jsonl` source does too; wide rows cost their full parse.
    """

    def __init__(self, cfg: HFDatasetSource, index: int) -> None:
        super().__init__(cfg, index)
        self.format, self.text_field, self.streaming = cfg.format, cfg.text_field, cfg.streaming
        self.files = resolve_paths(cfg.paths, self.describe())

    def describe(self) -> str:
        return f"sources[{self.index}] (hf {self.format}, domain {self.domain!r})"

    def documents(self, diag: Diagnostics) -> Iterator[Document]:
        datasets = _import_datasets(self.describe())
        self.records = []
        hint = f"set {self.describe().split(' ')[0]}.text_field to the text column"
        for ref in self.files:
            assert ref.path is not None
            record = hash_file(ref.path, ref.display)
            with tempfile.TemporaryDirectory(prefix="pretrainlab-hf-") as cache:
                batches = self._batches(datasets, ref, cache if self.streaming else None)
                yield from _documents_of_batches(
                    batches, ref, self.text_field, domain=self.domain, diag=diag, hint=hint,
                    read_error=lambda e, ref=ref: self._read_error(ref, e),
                )
            self.records.append(record)

    def _batches(self, datasets: Any, ref: FileRef, cache_dir: str | None) -> Iterator[dict[str, list[Any]]]:
        """The file's rows as column batches; errors surface on the first `next` (handled by the caller)."""
        with _hf_offline(datasets):
            ds = datasets.load_dataset(
                self.format, data_files=[str(ref.path)], split="train", streaming=self.streaming, cache_dir=cache_dir
            )
        if ds.column_names is not None and self.text_field in ds.column_names:
            ds = ds.select_columns([self.text_field])
        yield from ds.iter(batch_size=PARQUET_BATCH_ROWS)

    def _read_error(self, ref: FileRef, e: Exception) -> DataError:
        cause = getattr(e, "__cause__", None) or e  # datasets wraps the reader's error
        return DataError(
            f"{ref.display}: not readable as {self.format} by `datasets` ({type(cause).__name__}: {cause})",
            hint=f"check the file, or set {self.describe().split(' ')[0]}.format to the file's format",
        )


_SOURCE_TYPES: dict[str, type[Source]] = {
    "text": TextFilesSource,
    "stdlib": StdlibFilesSource,
    "jsonl": JsonlFilesSource,
    "parquet": ParquetFilesSource,
    "zip": ZipArchivesSource,
    "hf_disk": HFDiskDatasetSource,
    "hf": HFFilesSource,
}


def open_source(cfg: SourceConfig, index: int) -> Source:
    """The source for one config entry, its files resolved (DataError when a path matches nothing)."""
    if cfg.type == "procedural":  # generated documents (data/procedural, which imports this module)
        from pretrainlab.data.procedural.source import ProceduralDocumentsSource as procedural

        return procedural(cfg, index)
    return _SOURCE_TYPES[cfg.type](cfg, index)  # type: ignore[arg-type]
