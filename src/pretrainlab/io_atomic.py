"""Atomic, durable writes: a file (or a folder) is written under a temporary name, flushed to disk, then
renamed into place, so a reader sees the old content or the new, never a torn one, also after a crash.

`write_text_atomic(path, text)` and `write_json_atomic(path, obj)` for single files; `fsync_file` /
`fsync_dir` for code that builds a whole folder under a temporary name and renames it (the Hugging Face
export). `strict_json` makes a value JSON-safe (strict JSON has no NaN or Infinity).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float as None, recursively through dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def fsync_file(path: str | Path) -> None:
    """Flush `path`'s content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened
    (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file under `folder`, then every folder (deepest first), to disk."""
    folder = Path(folder)
    dirs = [folder]
    for p in sorted(folder.rglob("*")):
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            fsync_file(p)
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        fsync_dir(d)


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Write `text` to `path` through a unique temporary file beside it and a rename; with `durable`, the
    file and its folder are fsynced so the new content survives a crash. Returns `path`."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | Path, obj: Any, *, durable: bool = True) -> Path:
    """`obj` as indented strict JSON (non-finite floats as null), written atomically to `path`."""
    return write_text_atomic(path, json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n", durable=durable)
