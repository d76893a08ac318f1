"""Distributed setup: single-process fallbacks, and 2 CPU processes (gloo, torchrun) running FSDP2 on a toy
model with a tied embedding, with full-state checkpoints that move between world sizes in both directions.
(DDP and FSDP2 through the real trainer against 1 process: tests/train/test_resume.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    load_full_model_state,
    load_full_optimizer_state,
    no_sync,
    shutdown,
    unwrap_model,
    wrap_model,
)

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="gloo unavailable")

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", ["none", "ddp", "fsdp"])
def test_world_of_one_without_torchrun(no_torchrun_env: None, parallel: str) -> None:
    ctx = init_distributed(parallel, "cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.parallel) == (0, 1, 0, parallel)
    assert ctx.device == torch.device("cpu") and ctx.is_main and not ctx.is_distributed
    model = nn.Linear(3, 2)
    assert wrap_model(model, ctx) is model
    t = torch.tensor([2.0])
    assert all_reduce_sum(t, ctx).item() == 2.0
    with no_sync(model, ctx, enabled=True):
        pass
    barrier(ctx)
    shutdown(ctx)


def test_several_processes_need_a_parallel_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="parallel=none but 2 processes"):
        init_distributed("none", "cpu")


def test_bad_inputs(no_torchrun_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="parallel"):
        init_distributed("tp", "cpu")
    with pytest.raises(ConfigError, match="device"):
        init_distributed("none", "quantum")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        init_distributed("ddp", "cpu")


def test_unwrap_model_sees_through_wrappers() -> None:
    inner = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.module = m

    assert unwrap_model(Wrapper(Wrapper(inner))) is inner
    assert unwrap_model(inner) is inner


def test_full_state_round_trip_single_process() -> None:
    ctx = DistContext()
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt_a, opt_b = torch.optim.AdamW(a.parameters()), torch.optim.AdamW(b.parameters())
    a(torch.randn(3, 4)).sum().backward()
    opt_a.step()
    ms, os_ = full_model_state(a, ctx), full_optimizer_state(a, opt_a, ctx)
    assert set(os_["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}  # keyed by name, not position
    load_full_model_state(b, ms, ctx)
    load_full_optimizer_state(b, opt_b, os_, ctx)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
        assert torch.equal(opt_a.state[pa]["exp_avg_sq"], opt_b.state[pb]["exp_avg_sq"])


# --------------------------------------------------------------------------------------------
# two processes (torchrun, gloo)
# --------------------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    import torch.nn.functional as F
    from torch import nn
    from pretrainlab.train.checkpoint import load_checkpoint, save_checkpoint
    from pretrainlab.train.distributed import (all_reduce_sum, full_model_state, full_optimizer_state,
        init_distributed, load_full_model_state, load_full_optimizer_state, no_sync, shutdown, wrap_model)

    parallel, out, resume_from, steps, save_at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    torch.use_deterministic_algorithms(True)

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        def forward(self, x):
            return x + self.fc2(F.gelu(self.fc1(self.norm(x))))

    class Toy(nn.Module):  # embedding tied to the output, blocks in a ModuleList: the Decoder's layout
        def __init__(self, vocab=32, d=16, n=3):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        def forward(self, tokens):
            h = self.embed(tokens)
            for b in self.blocks:
                h = b(h)
            return F.linear(h, self.embed.weight)

    ctx = init_distributed(parallel, "cpu")
    torch.manual_seed(0)
    model = wrap_model(Toy(), ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    start = 0
    if resume_from != "-":
        weights, state = load_checkpoint(Path(resume_from))
        load_full_model_state(model, weights, ctx)
        load_full_optimizer_state(model, opt, state["optimizer"], ctx)
        start = state["step"]
    rows, accum = 8, 2
    per_rank = rows // ctx.world_size
    losses = []
    for step in range(start + 1, steps + 1):
        g = torch.Generator().manual_seed(step)
        data = torch.randint(0, 32, (rows, 9), generator=g)
        mine = data[ctx.rank * per_rank:(ctx.rank + 1) * per_rank]
        micro = per_rank // accum
        total = torch.zeros(())
        for i in range(accum):
            part = mine[i * micro:(i + 1) * micro]
            with no_sync(model, ctx, enabled=i < accum - 1):
                logits = model(part[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, 32), part[:, 1:].reshape(-1)) / accum
                loss.backward()
            total += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(all_reduce_sum(total, ctx).item() / ctx.world_size)
        if step == save_at:
            ms, osd = full_model_state(model, ctx), full_optimizer_state(model, opt, ctx)
            if ctx.is_main:
                save_checkpoint(out, step, model_state=ms, state={"step": step, "optimizer": osd}, keep=1)
    if ctx.is_main:
        (out / "losses.json").write_text(json.dumps(losses))
    shutdown(ctx)
    # As `pretrainlab.cli.main` does under torchrun: interpreter teardown with gloo/FSDP threads alive can
    # abort ("terminate called without an active exception") after a successful run.
    sys.stdout.flush()
    os._exit(0)
    """
)


def _run_worker(tmp_path: Path, name: str, parallel: str, nproc: int, resume: str = "-", steps: int = 6, save_at: int = 3) -> list[float]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / name
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(free_port()), str(script)]
    proc = subprocess.run(cmd + [parallel, str(out), resume, str(steps), str(save_at)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


@needs_gloo
@pytest.mark.slow
def test_fsdp_checkpoints_cross_world_sizes(tmp_path: Path) -> None:
    single = _run_worker(tmp_path, "single", "none", 1)
    assert len(single) == 6 and single[0] > single[-1]

    # the 1-process checkpoint of step 3 continues in 2 FSDP2 processes, which save step 5 ...
    ckpt_single = tmp_path / "single" / "checkpoints" / "step-3"
    fsdp = _run_worker(tmp_path, "fsdp", "fsdp", 2, resume=str(ckpt_single), save_at=5)
    assert fsdp == pytest.approx(single[3:], rel=1e-5)
    # ... and that 2-process FSDP2 checkpoint continues in 1 process
    ckpt_fsdp = tmp_path / "fsdp" / "checkpoints" / "step-5"
    resumed = _run_worker(tmp_path, "resumed", "none", 1, resume=str(ckpt_fsdp), save_at=0)
    assert resumed == pytest.approx(single[5:], rel=1e-5)


def test_no_sync_reaches_ddp_inside_a_compiled_wrapper(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pretrainlab.train.distributed import DistContext, no_sync

    if not dist.is_gloo_available():
        pytest.skip("gloo unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(nn.Linear(4, 4))
        ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), parallel="ddp")
        for model in (ddp, torch.compile(ddp)):  # compiling wraps the DDP module; nothing is run here
            with no_sync(model, ctx, enabled=True):
                assert ddp.require_backward_grad_sync is False
            assert ddp.require_backward_grad_sync is True
    finally:
        dist.destroy_process_group()
