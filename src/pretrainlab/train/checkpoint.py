"""Atomic, verified checkpoints: `run_dir/checkpoints/step-<N>/`.

A checkpoint folder holds
  model.safetensors  the weights (safetensors: no pickle at all),
  state.pt           optimiser, schedule, loader, RNG, callback state and trainer counters, written with
                     `torch.save` and read ONLY with `torch.load(weights_only=True)`, so nothing beyond plain
                     tensors and containers is ever unpickled (a `__reduce__` payload is refused, never run),
  manifest.json      sha256 and size of both files,
  COMPLETE           the completion marker (the sha256 of manifest.json), written last.

Writing follows the usual crash-safe recipe (as in OLMo-core / torchtitan "save then commit"): write into
`step-<N>.tmp-<pid>`, fsync every file and the folder, rename to `step-<N>`, then write and fsync COMPLETE
and fsync the parent. A crash at any point leaves either no `step-<N>` or one without COMPLETE, which is
ignored. Older checkpoints are pruned only after the new one is complete. Directory fsync is best effort:
filesystems that do not support it (EINVAL/ENOTSUP) are accepted.

Test hook: `PRETRAINLAB_TEST_KILL_AT=<point>:<step>` makes the process SIGKILL itself at an exact point,
so tests can crash a run deterministically (see `crash_point`). The points raised here are
`save:<N>` (files written in the temporary folder, before the rename) and `save_renamed:<N>` (after the
rename, before COMPLETE); the trainer may raise others (e.g. `step_end`, `micro_batch`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

from pretrainlab.errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
COMPLETE_FILE = "COMPLETE"
CHECKPOINT_FORMAT = 1
KILL_ENV = "PRETRAINLAB_TEST_KILL_AT"

_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_DIR = re.compile(r"^step-(\d+)\.tmp-(\d+)$")
_OLD_DIR = re.compile(r"^step-(\d+)\.old-(\d+)$")
_NO_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR, errno.EACCES}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def checkpoints_dir(run_dir: Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, step: int, *, model_state: dict[str, Tensor], state: dict[str, Any], keep: int
) -> Path:
    """Write `run_dir/checkpoints/step-<step>/` atomically and return it; keep the newest `keep` complete ones.

    `state` may hold dicts, lists, tuples, str, int, float, bool, None, bytes, torch dtypes and Tensors;
    anything else is refused here (naming its key path) because it could not be read back without pickle.
    Raises CheckpointError on a write failure (disk full says so) after removing the partial folder; the
    previous checkpoints are untouched.
    """
    if keep < 1:
        raise CheckpointError(f"keep={keep}: at least one checkpoint must be kept", hint="set train.keep_checkpoints >= 1")
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp-{os.getpid()}"
    _check_state(state, "state")
    weights = _weights_bytes(model_state)
    state_bytes = _state_bytes(state)
    current = MODEL_FILE
    displaced: Path | None = None
    renamed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files: dict[str, dict[str, Any]] = {}
        for name, data in ((MODEL_FILE, weights), (STATE_FILE, state_bytes)):
            current = name
            _write_durable(tmp / name, data)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        current = MANIFEST_FILE
        manifest = {"format": CHECKPOINT_FORMAT, "step": step, "created": time.time(), "files": files}
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        _write_durable(tmp / MANIFEST_FILE, manifest_bytes)
        _fsync_dir(tmp)
        crash_point("save", step)
        current = "(rename)"
        displaced = _displace(final)
        os.replace(tmp, final)
        renamed = True
        _fsync_dir(root)
        crash_point("save_renamed", step)
        current = COMPLETE_FILE
        _write_durable(final / COMPLETE_FILE, hashlib.sha256(manifest_bytes).hexdigest().encode())
        _fsync_dir(final)
        _fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if renamed:
            shutil.rmtree(final, ignore_errors=True)
        if displaced is not None and not final.exists():
            os.replace(displaced, final)
            displaced = None
        previous = list_checkpoints(run_dir)
        kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no earlier checkpoint exists"
        if e.errno in _DISK_FULL:
            raise CheckpointError(
                f"disk full (no space left on device) while writing {current} of checkpoint step-{step} in {root}; "
                f"the partial checkpoint was removed and {kept}",
                hint="free disk space, or lower train.keep_checkpoints / raise train.checkpoint_every",
            ) from e
        raise CheckpointError(
            f"could not write {current} of checkpoint step-{step} in {root} ({e.strerror or e}); "
            f"the partial checkpoint was removed and {kept}",
            hint="check that the run folder is writable",
        ) from e
    if displaced is not None:
        shutil.rmtree(displaced, ignore_errors=True)
    _prune(root, keep, newest=final)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders (those with COMPLETE), oldest step first. Nothing is verified here."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / COMPLETE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def checkpoint_step(path: Path) -> int:
    """The step number in a `step-<N>` folder name."""
    m = _STEP_DIR.match(Path(path).name)
    if m is None:
        raise CheckpointError(f"{path} is not a checkpoint folder (expected a name like step-100)")
    return int(m.group(1))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check COMPLETE, the manifest and every file's size and sha256; return the manifest.

    Raises CheckpointError naming the first file that is missing, truncated or altered.
    """
    path = Path(path)
    marker = path / COMPLETE_FILE
    manifest_path = path / MANIFEST_FILE
    if not marker.is_file():
        raise CheckpointError(
            f"checkpoint {path} is incomplete (no {COMPLETE_FILE} marker): it was interrupted while saving",
            hint="resume from an earlier checkpoint (--resume picks the newest complete one)",
        )
    try:
        manifest_bytes = manifest_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{manifest_path} is missing", hint="use an earlier checkpoint") from None
    if marker.read_bytes().strip() != hashlib.sha256(manifest_bytes).hexdigest().encode():
        raise CheckpointError(
            f"{manifest_path} does not match the checksum in {marker}: the manifest was altered or truncated",
            hint="use an earlier checkpoint",
        )
    try:
        manifest = json.loads(manifest_bytes)
        files = manifest["files"]
        entries = [(str(n), str(files[n]["sha256"]), int(files[n]["bytes"])) for n in (MODEL_FILE, STATE_FILE)]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{manifest_path} is not a valid checkpoint manifest", hint="use an earlier checkpoint") from None
    for name, sha, size in entries:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing", hint="use an earlier checkpoint")
        actual = f.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"{f} is truncated or altered: {actual} bytes, the manifest says {size}",
                hint="use an earlier checkpoint (--resume falls back to it)",
            )
        if _sha256_file(f) != sha:
            raise CheckpointError(
                f"{f} is altered: its sha256 differs from the manifest",
                hint="use an earlier checkpoint (--resume falls back to it)",
            )
    return manifest


def find_latest_checkpoint(run_dir: Path, *, warn: Callable[[str], None] = print) -> Path | None:
    """The newest complete checkpoint that verifies; each bad one is reported through `warn` and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warn(f"skipping checkpoint {path.name}: {e.message}")
            continue
        return path
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Verify checksums, then read (model_state, state); tensors come back on the CPU.

    `state.pt` is read with `torch.load(weights_only=True)`: a file that needs anything beyond plain tensors
    and containers (e.g. a pickle whose `__reduce__` would run code) is refused and nothing of it runs.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist", hint="check the path")
    verify_checkpoint(path)
    model_file, state_file = path / MODEL_FILE, path / STATE_FILE
    try:
        loaded = safetensors_load(model_file.read_bytes())
        model_state = {k: loaded[k] for k in sorted(loaded)}  # one order on every rank
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{model_file} is not a readable safetensors file ({e})", hint="use an earlier checkpoint") from None
    state = _load_state_file(state_file)
    return model_state, state


def crash_point(point: str, step: int) -> None:
    """Test-only: SIGKILL this process if `PRETRAINLAB_TEST_KILL_AT` equals `<point>:<step>`.

    A SIGKILL runs no cleanup handlers, exactly like an OOM kill or a lost node, which is what exact-resume
    tests must survive. Costs one environment lookup when unset.
    """
    target = os.environ.get(KILL_ENV)
    if target and target == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# internals
# --------------------------------------------------------------------------------------------


def _weights_bytes(model_state: dict[str, Tensor]) -> bytes:
    """Serialise weights; tied (storage-sharing) tensors are copied since safetensors refuses shared memory."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in model_state.items():
        if not isinstance(t, Tensor):
            raise CheckpointError(f"model_state[{name!r}] is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu")
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        t = t.clone() if key in seen or not t.is_contiguous() else t
        seen.add(key)
        out[name] = t.contiguous()
    return safetensors_save(out)


def _state_bytes(state: dict[str, Any]) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


_SCALARS = (str, int, float, bool, bytes, type(None), torch.dtype, torch.Size)


def _check_state(obj: Any, where: str) -> None:
    """Refuse at save time what `weights_only` loading would refuse later (naming the key path)."""
    if isinstance(obj, Tensor) or isinstance(obj, _SCALARS):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise CheckpointError(f"{where} has a key of type {type(k).__name__}; keys must be str or int")
            _check_state(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_state(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoint state may only hold "
        "tensors, numbers, strings, bools, None and dicts/lists/tuples of them",
        hint="convert it (e.g. numpy arrays to torch tensors or lists) in the state_dict() that produced it",
    )


def _load_state_file(state_file: Path) -> dict[str, Any]:
    import pickle

    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling refused"
        raise CheckpointError(
            f"{state_file} holds objects other than plain tensors and containers; it was refused without "
            f"running any of it ({first})",
            hint="do not load checkpoints from untrusted sources; use a checkpoint written by pretrainlab",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{state_file} could not be read ({e})", hint="use an earlier checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file} holds a {type(state).__name__}, not a state dict", hint="use an earlier checkpoint")
    return state


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        _fsync(f.fileno())


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_FSYNC:
            raise


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or new entry is durable; a no-op where the OS/filesystem cannot."""
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: directories cannot be opened for fsync
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        if e.errno in _NO_FSYNC:
            return
        raise
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _displace(final: Path) -> Path | None:
    """Move an existing `step-<N>` aside (a rerun of the same step); it is deleted once the new one is complete."""
    if not final.exists():
        return None
    if not (final / COMPLETE_FILE).is_file():
        shutil.rmtree(final)  # an interrupted save of this step: worthless
        return None
    aside = final.with_name(f"{final.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    return aside


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Remove temporary folders left by crashed saves (their writer process is gone)."""
    for p in root.iterdir():
        m = _TMP_DIR.match(p.name) or _OLD_DIR.match(p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def _prune(root: Path, keep: int, *, newest: Path) -> None:
    """Delete complete checkpoints beyond the newest `keep`, and incomplete ones older than `newest`."""
    newest_step = checkpoint_step(newest)
    complete = list_checkpoints(root.parent)
    for p in complete[:-keep]:
        if p != newest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and int(m.group(1)) < newest_step and not (p / COMPLETE_FILE).is_file():
            shutil.rmtree(p, ignore_errors=True)
