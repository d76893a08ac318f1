"""End-to-end exact resume through the CLI: SIGKILL at exact points, then `--resume`, gives bitwise the
per-step losses of an uninterrupted run (CPU, train.deterministic=true).

Crashes are placed with the test hook `PRETRAINLAB_TEST_KILL_AT=<point>:<step>` (see
`pretrainlab.train.checkpoint.crash_point`): `step_end` (after the step's metrics line), `micro_batch`
(between the first and second micro-batch of the step: mid gradient accumulation), `save` (checkpoint
files written, not yet renamed) and `save_renamed` (renamed, completion marker not yet written).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import make_prepared  # noqa: E402

from pretrainlab.train.checkpoint import find_latest_checkpoint, list_checkpoints  # noqa: E402

STEPS = 8
SEQ_LEN = 32
ROWS = 8  # rows per step: 4 micro-batches of 2 on one process, 2 of 2 on each of two
WINDOWS_PER_EPOCH = 12  # 10 documents of 42 tokens: (420 - 32) // 32 windows
KILLED = -signal.SIGKILL
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def write_data(path: Path, seed: int = 0, n_docs: int = 10) -> Path:
    rng = np.random.default_rng(seed)
    docs = [list(rng.integers(0, 256, size=41)) for _ in range(n_docs)]
    return make_prepared(path, train={"text": docs})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    write_data(root / "data")
    cfg = {
        "name": "ref",
        "out_dir": str(root / "runs"),
        "seed": 3,
        "device": "cpu",
        "data": {"path": str(root / "data"), "seq_len": SEQ_LEN},
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "mlp_hidden": 64},
        "optim": {"lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 2},
        "train": {
            "steps": STEPS,
            "global_batch_tokens": ROWS * SEQ_LEN,
            "micro_batch_size": 2,
            "deterministic": True,
            "precision": "fp32",  # bf16 autocast rounds differently per process count
            "log_every": 1,
            "checkpoint_every": 3,
            "keep_checkpoints": 2,
            "progress": False,
            "threads": 1,
        },
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(root: Path, name: str, *overrides: str, resume: bool = False, kill_at: str | None = None,
          nproc: int = 1, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV and k != "PRETRAINLAB_TEST_KILL_AT"}
    env["OMP_NUM_THREADS"] = "1"
    if kill_at is not None:
        env["PRETRAINLAB_TEST_KILL_AT"] = kill_at
    if nproc == 1:
        cmd = [sys.executable, "-m", "pretrainlab"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(port or free_port()), "-m", "pretrainlab"]
    cmd += ["train", str(root / "cfg.yaml"), f"name={name}", *overrides] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss of the train lines of metrics.jsonl (a later line for a step wins)."""
    out: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec and "event" not in rec and "val_loss" not in rec:
            out[int(rec["step"])] = rec["loss"]
    return out


def latest_step(run_dir: Path) -> int | None:
    path = find_latest_checkpoint(run_dir, warn=lambda m: None)
    return None if path is None else int(path.name.split("-")[1])


@pytest.fixture(scope="module")
def reference(workdir: Path) -> dict[int, float]:
    ok(train(workdir, "ref"))
    ref = losses(workdir / "runs" / "ref")
    assert sorted(ref) == list(range(1, STEPS + 1))
    return ref


def test_reference_run_crosses_epochs_at_the_checkpoint(workdir: Path, reference: dict[int, float]) -> None:
    """The data is small: the loader finishes its 2nd epoch exactly at the step-3 checkpoint."""
    from pretrainlab.data.loader import TokenLoader
    from pretrainlab.data.prepared import PreparedData

    loader = TokenLoader(PreparedData(workdir / "data"), seq_len=SEQ_LEN, global_rows=ROWS, seed=3)
    assert loader.windows_per_epoch() == {"text": WINDOWS_PER_EPOCH}
    for _ in range(3):
        loader.next_batch()
    assert loader.epochs_seen()["text"] == pytest.approx(2.0)
    assert [p.name for p in list_checkpoints(workdir / "runs" / "ref")] == ["step-6", "step-8"]


@pytest.mark.slow
def test_kills_mid_accumulation_inside_saves_and_after_steps_resume_exactly(
    workdir: Path, reference: dict[int, float]
) -> None:
    run = workdir / "runs" / "chain"
    # 1. killed between micro-batches of step 5: step-3 (an epoch boundary) is the newest checkpoint
    assert train(workdir, "chain", kill_at="micro_batch:5").returncode == KILLED
    assert latest_step(run) == 3
    # 2. resumed, killed while writing step-6 (files written, not renamed): the partial folder is ignored
    assert train(workdir, "chain", resume=True, kill_at="save:6").returncode == KILLED
    assert any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())
    assert latest_step(run) == 3
    # 3. resumed, killed after the rename but before the completion marker: still ignored
    assert train(workdir, "chain", resume=True, kill_at="save_renamed:6").returncode == KILLED
    assert (run / "checkpoints" / "step-6").is_dir() and latest_step(run) == 3
    # 4. resumed, killed right after step 7 was logged: step-6 is complete now
    assert train(workdir, "chain", resume=True, kill_at="step_end:7").returncode == KILLED
    assert latest_step(run) == 6
    assert losses(run)[7] == reference[7]
    # 5. resumed to the end: every step's loss is bitwise the uninterrupted run's
    ok(train(workdir, "chain", resume=True))
    assert losses(run) == reference
    assert [p.name for p in list_checkpoints(run)] == ["step-6", "step-8"]
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_damaged_checkpoint_is_refused_and_resume_falls_back(workdir: Path, reference: dict[int, float]) -> None:
    run = workdir / "runs" / "damaged"
    shutil.copytree(workdir / "runs" / "ref", run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("name: ref", "name: damaged"))
    state = run / "checkpoints" / "step-8" / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    proc = ok(train(workdir, "damaged", resume=True))
    said = proc.stdout + proc.stderr
    assert "step-8" in said and "state.pt" in said and "truncated" in said
    assert "resumed from" in said and "step-6" in said
    assert losses(run) == reference


def test_resume_on_changed_data_needs_permission(workdir: Path, reference: dict[int, float]) -> None:
    run = workdir / "runs" / "moved"
    shutil.copytree(workdir / "runs" / "ref", run)
    shutil.rmtree(run / "checkpoints" / "step-8")
    write_data(workdir / "other_data", seed=1, n_docs=11)
    other = f"data.path={workdir / 'other_data'}"
    proc = train(workdir, "moved", other, resume=True)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fingerprint" in proc.stderr and "data.allow_fingerprint_change" in proc.stderr
    ok(train(workdir, "moved", other, "data.allow_fingerprint_change=true", resume=True))
    assert latest_step(run) == STEPS


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(workdir: Path, reference: dict[int, float]) -> None:
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_gloo_available():
        pytest.skip("gloo unavailable")
    ok(train(workdir, "ddp", "parallel=ddp", nproc=2))
    assert losses(workdir / "runs" / "ddp") == pytest.approx(reference, rel=1e-5)

    run = workdir / "runs" / "fsdp"
    proc = train(workdir, "fsdp", "parallel=fsdp", nproc=2, kill_at="step_end:5")
    assert proc.returncode != 0 and latest_step(run) == 3
    before = losses(run)
    assert before == pytest.approx({s: reference[s] for s in range(1, 6)}, rel=1e-5)
    ok(train(workdir, "fsdp", "parallel=fsdp", nproc=2, resume=True))
    after = losses(run)
    assert after == pytest.approx(reference, rel=1e-5)
    assert [after[s] for s in (4, 5)] == [before[s] for s in (4, 5)]  # replayed steps: bitwise the same
