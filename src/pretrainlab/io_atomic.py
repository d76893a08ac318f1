"""Atomic, durable writes: a file (or a folder) is written under a temporary name, flushed to disk, then
renamed into place, so a reader sees the old content or the new, never a torn one, also after a crash.

`write_text_atomic(path, text)` for single files; `fsync_file` / `fsync_dir` for code that builds a whole
folder under a temporary name and renames it (the Hugging Face export). Other modules with their own
`_write_atomic` helpers (science/sweep.py, eval/tasks/cli.py, ...) can switch to this one.
"""

from __future__ import annotations

import os
from pathlib import Path


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
    """Write `text` to `path` through `<path>.tmp-<pid>` and a rename; with `durable`, the file and its
    folder are fsynced so the new content survives a crash. Returns `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding=encoding) as f:
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
