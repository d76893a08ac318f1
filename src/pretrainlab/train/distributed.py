"""Process groups, DDP / FSDP2 wrapping, full (unsharded) state dicts and collective helpers.

Launch with torchrun (`python -m torch.distributed.run --nproc-per-node N -m pretrainlab train ...`): it sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, which `init_distributed` reads (gloo on CPU, nccl
on CUDA). Without torchrun every function here degrades to the single-process case, so one code path serves
both.

Checkpoints are always full state dicts (torch.distributed.checkpoint.state_dict with
`full_state_dict=True, cpu_offload=True`), keyed by parameter names, so a checkpoint written by 2 processes
loads in 1 and vice versa, for DDP and FSDP2 alike (the approach of torchtitan's "full" checkpoints).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretrainlab.errors import ConfigError

PARALLEL_MODES = ("none", "ddp", "fsdp")


@dataclass
class DistContext:
    """Who this process is in the job, and how the model is parallelised."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallel: str = "none"  # "none" | "ddp" | "fsdp"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files (metrics, checkpoints, reports)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group of more than one process is running."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer", hint="launch with torchrun") from None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this process's CUDA device when there is one, else the CPU; `cuda` -> cuda:<local_rank>."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: {device!r} is not a device", hint="use auto, cpu, cuda or cuda:<i>") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but no CUDA device is available", hint="set device=cpu or auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def init_distributed(parallel: str, device: str = "auto") -> DistContext:
    """Read torchrun's environment and start the process group (gloo on CPU, nccl on CUDA).

    `parallel != "none"` without torchrun's variables gives a world of 1 (no process group; the model is
    left unwrapped). Several processes with `parallel="none"` would each train the same model into the same
    run folder, so that is an error.
    """
    if parallel not in PARALLEL_MODES:
        raise ConfigError(f"parallel: {parallel!r} is not one of {', '.join(PARALLEL_MODES)}")
    world_size = _env_int("WORLD_SIZE", 1)
    _env_int("RANK", 0)  # checked only (a malformed RANK is an error); the process group gives the rank
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(rank=0, world_size=1, local_rank=0, device=dev, parallel=parallel)
    if parallel == "none":
        raise ConfigError(
            f"parallel=none but {world_size} processes were launched (WORLD_SIZE={world_size})",
            hint="set parallel=ddp or parallel=fsdp, or launch a single process",
        )
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed", hint="launch a single process")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "gloo" and not dist.is_gloo_available():
        raise ConfigError("the gloo backend is not available in this PyTorch build", hint="launch a single process")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("the nccl backend is not available in this PyTorch build", hint="use device=cpu (gloo)")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=30)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev, parallel=parallel
    )


def _transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP2 shards one by one: the items of the model's (largest) ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        return []
    return list(max(lists, key=len))


def wrap_model(model: nn.Module, ctx: DistContext, *, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Move the model to `ctx.device` and wrap it for `ctx.parallel` (unchanged in a world of 1).

    ddp: DistributedDataParallel. fsdp: FSDP2 `fully_shard` on each transformer block, then on the root
    (which holds the embedding and the possibly tied output weight), as torchtitan does; `param_dtype`
    (e.g. bf16) sets its mixed-precision policy, with fp32 gradient reduction. Build the optimiser AFTER
    this call: FSDP2 replaces parameters with sharded DTensors.
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed or ctx.parallel == "none":
        return model
    if ctx.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if ctx.parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        for block in _transformer_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise ConfigError(f"parallel: {ctx.parallel!r} is not one of {', '.join(PARALLEL_MODES)}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers (FSDP2 shards in place: the model itself)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _full_options(**extra: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def full_model_state(model: nn.Module, ctx: DistContext) -> dict[str, Tensor]:
    """Full, unsharded CPU weights keyed by parameter name. Every rank must call it (FSDP gathers);
    in a distributed run only rank 0 gets the tensors (others get {}), which is the rank that saves."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict[str, Any]:
    """Full optimiser state keyed by parameter name (not by position), so it loads under any world size.
    Every rank must call it; in a distributed run only rank 0 gets the content."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_model_state(model: nn.Module, state: dict[str, Tensor], ctx: DistContext) -> None:
    """Load full weights (every rank passes the same full dict; FSDP keeps its own shard).

    Keys are put in sorted order first: FSDP scatters one tensor per key in the dict's order, so ranks
    must agree on it (safetensors does not promise an order).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, {k: state[k] for k in sorted(state)}, options=_full_options())


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], ctx: DistContext
) -> None:
    """Load a full optimiser state written by `full_optimizer_state` (every rank passes the same dict)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_full_options())


@contextlib.contextmanager
def no_sync(model: nn.Module, ctx: DistContext, enabled: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on non-final micro-batches (`enabled=True`); a no-op otherwise.

    FSDP2 still reduce-scatters every micro-batch: keeping unsharded gradients would cost the memory that
    sharding saves.
    """
    from torch.nn.parallel import DistributedDataParallel

    inner = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    if enabled and isinstance(inner, DistributedDataParallel):
        model = inner
        with model.no_sync():
            yield
    else:
        yield


def all_reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    """Sum `t` over all ranks, in place; returned for chaining. Identity in a world of 1."""
    if ctx.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: Tensor, ctx: DistContext) -> Tensor:
    """Mean of `t` over all ranks, in place (float tensors)."""
    if ctx.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(ctx.world_size)
    return t


def all_reduce_max(t: Tensor, ctx: DistContext) -> Tensor:
    """Maximum of `t` over all ranks, in place (e.g. "any rank wants to stop")."""
    if ctx.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank `src`'s picklable Python object on every rank (e.g. the checkpoint path rank 0 chose).
    Only for objects made by this program; never for data read from disk."""
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.is_distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def shutdown(ctx: DistContext, *, wait: bool = True) -> None:
    """Destroy the process group (safe to call twice or without one).

    `wait=True` first waits for every rank: tearing gloo down while another rank still finishes its last
    collectives aborts the process (seen with FSDP2 on CPU). Pass `wait=False` on error paths, where the
    other ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait and ctx.is_distributed:
            barrier(ctx)
        dist.destroy_process_group()
