"""How a global batch given in tokens becomes rows, micro-batches and accumulation steps.

global_rows = train.global_batch_tokens / data.seq_len (exact), split evenly over the processes and
then into micro-batches of train.micro_batch_size rows; the remainder becomes gradient-accumulation
steps. Checked before anything is built, so a bad combination costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrainlab.config import RunConfig
from pretrainlab.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    seq_len: int
    global_rows: int
    micro_batch_size: int
    world_size: int

    @property
    def rows_per_rank(self) -> int:
        return self.global_rows // self.world_size

    @property
    def accum_steps(self) -> int:
        return self.rows_per_rank // self.micro_batch_size

    @property
    def tokens_per_step(self) -> int:
        """Input tokens consumed per optimiser step by all processes (= train.global_batch_tokens)."""
        return self.global_rows * self.seq_len


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan_batches(cfg: RunConfig, world_size: int = 1) -> BatchPlan:
    """The batch layout of `cfg` on `world_size` processes; ConfigError naming the field when it does not divide."""
    seq_len = cfg.data.seq_len
    gbt = cfg.train.global_batch_tokens
    mbs = cfg.train.micro_batch_size
    if gbt % seq_len:
        lower = max(seq_len, gbt // seq_len * seq_len)
        raise ConfigError(
            f"train.global_batch_tokens={gbt} is not a multiple of data.seq_len={seq_len}",
            hint=f"use e.g. train.global_batch_tokens={lower} or {lower + seq_len}",
        )
    rows = gbt // seq_len
    if rows % (mbs * world_size):
        per = mbs * world_size
        good = [d for d in _divisors(rows) if (rows // world_size) % d == 0] if rows % world_size == 0 else []
        if good:
            hint = f"choose train.micro_batch_size from {good}"
        else:
            hint = (
                f"make train.global_batch_tokens a multiple of {seq_len * per} "
                "(data.seq_len x train.micro_batch_size x processes)"
            )
        raise ConfigError(
            f"train.global_batch_tokens={gbt} gives {rows} rows of data.seq_len={seq_len}, which do not split into "
            f"micro-batches of train.micro_batch_size={mbs} on {world_size} process(es) "
            f"({rows} is not a multiple of {per})",
            hint=hint,
        )
    return BatchPlan(seq_len=seq_len, global_rows=rows, micro_batch_size=mbs, world_size=world_size)
