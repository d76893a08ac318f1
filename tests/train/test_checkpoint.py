"""Checkpoint files: atomic write, verification, fallback, pruning, safety against pickles and full disks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pretrainlab.errors import CheckpointError
from pretrainlab.train import checkpoint as ck
from pretrainlab.train.checkpoint import (
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


def _model_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(10, 4, generator=g)
    return {"emb.weight": emb, "out.weight": emb, "blocks.0.w": torch.randn(4, 4, generator=g).t()}


def _state(step: int) -> dict:
    return {
        "step": step,
        "optimizer": {"state": {0: {"exp_avg": torch.ones(3) * step}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95)}]},
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(5)), None)},
        "loader": {"epoch": 1, "order": torch.arange(6), "name": "alpha", "weights": [0.5, 0.5], "flag": True},
        "dtype": torch.bfloat16,
    }


def test_roundtrip_and_layout(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 7, model_state=_model_state(), state=_state(7), keep=2)
    assert path == tmp_path / "checkpoints" / "step-7"
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE", "manifest.json", "model.safetensors", "state.pt"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 7
    assert manifest["files"]["state.pt"]["bytes"] == (path / "state.pt").stat().st_size
    weights, state = load_checkpoint(path)
    for k, v in _model_state().items():
        assert torch.equal(weights[k], v)
    assert state["step"] == 7 and state["dtype"] is torch.bfloat16
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.full((3,), 7.0))
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert state["rng"]["torch"].dtype == torch.uint8 and state["rng"]["python"] == (3, (0, 1, 2, 3, 4), None)
    assert state["loader"]["name"] == "alpha" and state["loader"]["flag"] is True
    assert not any(".tmp-" in p.name for p in (tmp_path / "checkpoints").iterdir())


def test_keeps_last_k_and_lists_oldest_first(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path, step, model_state=_model_state(step), state=_state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-6", "step-8"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-6", "step-8"]
    assert find_latest_checkpoint(tmp_path, warn=lambda m: None) == tmp_path / "checkpoints" / "step-8"


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path) == []
    assert find_latest_checkpoint(tmp_path) is None


def test_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, model_state=_model_state(), state=_state(1), keep=3)
    p2 = save_checkpoint(tmp_path, 2, model_state=_model_state(), state=_state(2), keep=3)
    (p2 / "COMPLETE").unlink()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-1"]
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(p2)
    # the next save cleans the interrupted one up only if it is older; a re-save of step 2 replaces it
    p2b = save_checkpoint(tmp_path, 2, model_state=_model_state(5), state=_state(2), keep=3)
    assert torch.equal(load_checkpoint(p2b)[0]["blocks.0.w"], _model_state(5)["blocks.0.w"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("victim", ["model.safetensors", "state.pt", "manifest.json"])
def test_damaged_checkpoint_is_refused_naming_the_file_and_falls_back(tmp_path: Path, damage: str, victim: str) -> None:
    save_checkpoint(tmp_path, 1, model_state=_model_state(1), state=_state(1), keep=3)
    p2 = save_checkpoint(tmp_path, 2, model_state=_model_state(2), state=_state(2), keep=3)
    f = p2 / victim
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    else:
        f.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p2)
    assert victim in str(info.value)
    warnings: list[str] = []
    assert find_latest_checkpoint(tmp_path, warn=warnings.append) == tmp_path / "checkpoints" / "step-1"
    assert len(warnings) == 1 and "step-2" in warnings[0] and victim in warnings[0]


def test_state_with_unsupported_objects_is_refused_at_save(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(CheckpointError, match=r"state\['loader'\]\['order'\].*numpy"):
        save_checkpoint(tmp_path, 1, model_state=_model_state(), state={"loader": {"order": np.arange(3)}}, keep=1)
    assert list_checkpoints(tmp_path) == []


class _Payload:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 3, model_state=_model_state(), state=_state(3), keep=2)
    marker = tmp_path / "pwned"
    torch.save({"step": 3, "evil": _Payload(str(marker))}, path / "state.pt")
    # An attacker who can write the file can also rewrite the manifest: make it verify.
    _refresh_manifest(path)
    with pytest.raises(CheckpointError, match="state.pt") as info:
        load_checkpoint(path)
    assert "refused" in str(info.value)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path / "state.pt", weights_only=False)
    assert marker.exists()


def _refresh_manifest(path: Path) -> None:
    import hashlib

    manifest = json.loads((path / "manifest.json").read_text())
    for name in ("model.safetensors", "state.pt"):
        data = (path / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    raw = json.dumps(manifest).encode()
    (path / "manifest.json").write_bytes(raw)
    (path / "COMPLETE").write_text(hashlib.sha256(raw).hexdigest())


def test_disk_full_keeps_previous_and_removes_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, model_state=_model_state(1), state=_state(1), keep=1)
    real = ck._write_durable

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "state.pt":
            with open(path, "wb") as f:
                f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write_durable", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 2, model_state=_model_state(2), state=_state(2), keep=1)
    msg = str(info.value)
    assert "disk full" in msg and "state.pt" in msg and "step-1" in msg and "intact" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-1"
    load_checkpoint(tmp_path / "checkpoints" / "step-1")


def test_disk_full_while_writing_marker_removes_the_renamed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, model_state=_model_state(1), state=_state(1), keep=1)
    real = ck._write_durable

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "COMPLETE":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write_durable", full_disk)
    with pytest.raises(CheckpointError, match="disk full"):
        save_checkpoint(tmp_path, 2, model_state=_model_state(2), state=_state(2), keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]


def test_filesystem_without_fsync_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fsync(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", no_fsync)
    path = save_checkpoint(tmp_path, 5, model_state=_model_state(), state=_state(5), keep=1)
    assert find_latest_checkpoint(tmp_path) == path


def test_fsync_io_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(CheckpointError, match="could not write"):
        save_checkpoint(tmp_path, 5, model_state=_model_state(), state=_state(5), keep=1)
    assert list((tmp_path / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("point", ["save", "save_renamed"])
def test_kill_inside_save_leaves_previous_checkpoint(tmp_path: Path, point: str) -> None:
    """A SIGKILL in the middle of a save (test hook) leaves only an ignored partial folder."""
    script = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from pretrainlab.train.checkpoint import save_checkpoint
        s = {{"w": torch.ones(3)}}
        save_checkpoint(Path({str(tmp_path)!r}), 1, model_state=s, state={{"step": 1}}, keep=2)
        save_checkpoint(Path({str(tmp_path)!r}), 2, model_state=s, state={{"step": 2}}, keep=2)
        """
    )
    env = dict(os.environ, PRETRAINLAB_TEST_KILL_AT=f"{point}:2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "step-1" in names and len(names) == 2  # plus the partial one
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-1"
    # the next save (a resumed run) clears the debris and completes
    save_checkpoint(tmp_path, 2, model_state={"w": torch.ones(3)}, state={"step": 2}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_checkpoint_step_and_bad_names(tmp_path: Path) -> None:
    assert ck.checkpoint_step(Path("x/step-12")) == 12
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        ck.checkpoint_step(Path("x/latest"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="keep"):
        save_checkpoint(tmp_path, 1, model_state=_model_state(), state={}, keep=0)


def test_verify_returns_manifest(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 4, model_state=_model_state(), state=_state(4), keep=1)
    assert set(verify_checkpoint(path)["files"]) == {"model.safetensors", "state.pt"}
