"""The token loader: mixture sampling over domains with an exact, small, JSON-serialisable state.

The data order is a pure function of the state {seed, next global batch number, one window counter
per domain, weights}: batch b's row domains are drawn from a generator keyed by (seed, b), and each
domain's k-th window is window `perm_e[k mod W]` of epoch `e = k // W`, where `perm_e` is keyed by
(seed, domain, e). Nothing else is random, so a loader restored from `state_dict()` yields exactly
the batches the original would have (the "stateless, resumable data loader" of torchtitan/OLMo-core,
without storing any permutation). Every rank computes the whole global batch plan and advances all
counters, then reads only its own contiguous slice of rows: one process and N processes see the same
global batch, and a run can resume on a different number of processes.

The weights that draw batch b are a pure function of that state too: the fixed weights (or the last
`set_weights`), or the stage of a `MixtureSchedule` in force at token `b x global_rows x seq_len`, then
the repetition caps (`max_epochs`, checked against the window counters before the batch).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from pretrainlab.data.batch import Batch
from pretrainlab.data.mixture_caps import epoch_caps, without_capped
from pretrainlab.data.mixture_schedule import MixtureSchedule
from pretrainlab.data.prepared import PreparedData
from pretrainlab.data.sampling import draw_domains, normalise_weights
from pretrainlab.data.shards import SPLITS
from pretrainlab.data.windows import EpochOrder, PackedRows, RandomWindows, gather_rows
from pretrainlab.errors import ConfigError, DataError

STATE_VERSION = 1
_MODES = ("random", "packed")


class TokenLoader:
    """Rows of `seq_len + 1` tokens drawn from a prepared folder's domains by weight.

    `next_batch()` returns this rank's `global_rows // world_size` rows of the next global batch.
    In `random` mode rows are contiguous windows (no loss mask); in `packed` mode rows are
    document-aligned and padded, with `loss_mask` False on padding.

    The mixture is `weights` (default: proportional to tokens), changeable with `set_weights`, or a
    `schedule` of stages (then `set_weights` is refused). `max_epochs` (one cap or {domain: cap}) stops
    drawing a domain once it has served that many epochs of its windows.
    """

    def __init__(
        self,
        data: PreparedData,
        *,
        seq_len: int,
        global_rows: int,
        seed: int,
        mode: Literal["random", "packed"] = "random",
        weights: dict[str, float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        schedule: MixtureSchedule | None = None,
        max_epochs: float | dict[str, float] | None = None,
    ) -> None:
        _check_arguments(seq_len, global_rows, seed, mode, rank, world_size, split)
        self.data = data
        self.seq_len = int(seq_len)
        self.row_len = self.seq_len + 1
        self.global_rows = int(global_rows)
        self.seed = int(seed)
        self.mode: str = mode
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.split = split
        self.domains: list[str] = data.domains
        self.pad_id = data.pad_id

        self._tokens: list[np.ndarray] = []
        self._layouts: list[RandomWindows | PackedRows] = []
        for name in self.domains:
            shard = data.shard(name, split)
            # A plain ndarray view of the memmap: fancy indexing skips np.memmap's subclass overhead.
            self._tokens.append(np.asarray(shard.tokens))
            if mode == "random":
                self._layouts.append(RandomWindows(shard.n_tokens, self.seq_len))
            else:
                self._layouts.append(PackedRows(np.asarray(shard.offsets), self.seq_len))
        self._usable = {name: layout.n_windows > 0 for name, layout in zip(self.domains, self._layouts)}

        self.schedule = schedule
        if schedule is not None:
            if weights is not None:
                raise ConfigError("give data.weights or data.stages, not both",
                                  hint="each stage carries its own weights; remove data.weights")
            if list(schedule.domains) != self.domains:
                raise DataError(
                    f"the mixture schedule was built for domains {', '.join(schedule.domains)}; the data in "
                    f"{data.path} has {', '.join(self.domains)}",
                    hint="build the schedule from this prepared folder's domains",
                )
            for i, stage in enumerate(schedule.weights):
                normalise_weights(stage, self.domains, usable=self._usable, where=f"data.stages.{i}.weights")
            weights = dict(zip(self.domains, schedule.probs[0].tolist()))
            where = "data.stages.0.weights"
        elif weights is None:
            where = f"default weights (proportional to {split} tokens)"
            # A domain too small for one row gets 0 here; only weights the user gave make that an error.
            weights = {d: float(n) if self._usable[d] else 0.0 for d, n in data.domain_tokens(split).items()}
        else:
            where = "data.weights"
        self._probs = normalise_weights(weights, self.domains, usable=self._usable, where=where)
        self._batch = 0
        self._counters = [0] * len(self.domains)
        self._orders: dict[int, EpochOrder] = {}
        self.tokens_per_batch = self.global_rows * self.seq_len
        caps = epoch_caps(max_epochs, self.domains)
        self._caps = caps
        self._cap_windows: np.ndarray | None = None
        if caps is not None:
            per_epoch = np.asarray([layout.n_windows for layout in self._layouts], dtype=np.float64)
            self._cap_windows = np.where(np.isfinite(caps), caps * per_epoch, np.inf)
        self._capped_at: dict[str, int] = {}  # domain -> first token at which it was found at its cap
        self._last_probs: np.ndarray | None = None  # what drew the latest batch (for the metrics)

    # ---------------------------------------------------------------- mixture

    @property
    def weights(self) -> dict[str, float]:
        """The probability of each domain (manifest order) for the next batch: the fixed weights or the
        schedule's stage, with capped domains at 0 (all 0 when every domain it draws from is capped)."""
        probs = self._next_probs()
        if probs is None:
            probs = np.zeros(len(self.domains))
        return {name: float(p) for name, p in zip(self.domains, probs)}

    def set_weights(self, weights: dict[str, float]) -> None:
        """Change the mixture from the next batch on (unnamed domains get 0; validated first).

        In place and O(domains): online re-weighting (Skill-it, a mixing agent) may call it every step.
        Refused (ConfigError) when a schedule of stages owns the mixture.
        """
        if self.schedule is not None:
            raise ConfigError(
                "data.stages is set: the mixture follows its stages, so an online re-weighting callback "
                "(set_weights) cannot change it",
                hint="use either data.stages or the re-weighting callback, not both",
            )
        self._probs = normalise_weights(weights, self.domains, usable=self._usable, where="weights")

    def mixture_metrics(self) -> dict[str, dict[str, float]]:
        """For the train log lines: `domain_weights` (the probabilities that drew the latest batch; the next
        batch's before any), `domain_share` (each domain's share of the rows drawn so far) and
        `domain_epochs` (epochs of its windows seen)."""
        probs = self._last_probs if self._last_probs is not None else self._next_probs()
        if probs is None:
            probs = np.zeros(len(self.domains))
        total = sum(self._counters)
        return {
            "domain_weights": {name: float(p) for name, p in zip(self.domains, probs)},
            "domain_share": {name: (c / total if total else 0.0) for name, c in zip(self.domains, self._counters)},
            "domain_epochs": self.epochs_seen(),
        }

    def _base_probs(self) -> np.ndarray:
        """The weights for the next batch before caps: the schedule's stage, or the fixed/set weights."""
        if self.schedule is None:
            return self._probs
        return self.schedule.weights_at(self._batch * self.tokens_per_batch)

    def _capped(self) -> np.ndarray | None:
        """Which domains have reached their cap (None without caps)."""
        return None if self._cap_windows is None else np.asarray(self._counters) >= self._cap_windows

    def _next_probs(self, capped: np.ndarray | None = None) -> np.ndarray | None:
        """The next batch's probabilities after caps; None when every domain it draws from is capped."""
        probs = self._base_probs()
        capped = self._capped() if capped is None else capped
        return probs if capped is None else without_capped(probs, capped)

    def _exhausted(self) -> DataError:
        tokens = self._batch * self.tokens_per_batch
        epochs = self.epochs_seen()
        assert self._caps is not None
        hit = [
            f"{name!r} at token {self._capped_at.get(name, tokens):,} ({epochs[name]:.2f} epochs, cap {cap:g})"
            for name, p, cap in zip(self.domains, self._base_probs(), self._caps)
            if p > 0
        ]
        return DataError(
            f"no data left for batch {self._batch} (token {tokens:,}): every domain the mixture draws from has "
            f"reached its data.max_epochs cap: {'; '.join(hit)}",
            hint="raise data.max_epochs for those domains (or remove the cap), add data to them, give weight "
            "to other domains, or train for fewer steps",
        )

    def epochs_seen(self) -> dict[str, float]:
        """Windows used / windows per epoch, per domain (0.0 for a domain that has no rows)."""
        return {
            name: (c / layout.n_windows if layout.n_windows else 0.0)
            for name, c, layout in zip(self.domains, self._counters, self._layouts)
        }

    def windows_per_epoch(self) -> dict[str, int]:
        return {name: layout.n_windows for name, layout in zip(self.domains, self._layouts)}

    def fill_rate(self) -> dict[str, float]:
        """Fraction of row positions holding real tokens, per domain (1.0 in random mode)."""
        return {name: layout.fill_rate for name, layout in zip(self.domains, self._layouts)}

    @property
    def batches_seen(self) -> int:
        """The number of global batches produced so far (the next batch's number)."""
        return self._batch

    # ---------------------------------------------------------------- batches

    def next_batch(self) -> Batch:
        """This rank's rows [rank*n, (rank+1)*n) of the next global batch, n = global_rows // world_size."""
        n_local = self.global_rows // self.world_size
        lo = self.rank * n_local
        hi = lo + n_local
        capped = self._capped()
        if capped is not None and capped.any():  # remember when each domain was first found at its cap
            tokens = self._batch * self.tokens_per_batch
            for d in np.flatnonzero(capped).tolist():
                self._capped_at.setdefault(self.domains[d], tokens)
        probs = self._next_probs(capped)
        if probs is None:
            raise self._exhausted()
        self._last_probs = probs
        row_domains = draw_domains(self.seed, self._batch, probs, self.global_rows)

        tokens = np.empty((n_local, self.row_len), dtype=np.int64)
        mask = np.ones((n_local, self.row_len), dtype=bool) if self.mode == "packed" else None
        for d in np.unique(row_domains).tolist():
            rows = np.flatnonzero(row_domains == d)
            counters = self._counters[d] + np.arange(rows.size, dtype=np.int64)
            self._counters[d] += int(rows.size)
            mine = (rows >= lo) & (rows < hi)
            if not mine.any():
                continue
            starts, lengths = self._locate(d, counters[mine])
            out_rows = rows[mine] - lo
            values, real = gather_rows(self._tokens[d], starts, lengths, self.row_len, self.pad_id)
            tokens[out_rows] = values
            if mask is not None:
                mask[out_rows] = real
        self._batch += 1
        return Batch(
            tokens=torch.from_numpy(tokens),
            loss_mask=None if mask is None else torch.from_numpy(mask),
            domains=torch.from_numpy(row_domains[lo:hi].copy()),
        )

    def _locate(self, d: int, counters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start offsets and lengths of domain d's windows number `counters` (ascending)."""
        layout = self._layouts[d]
        epochs = counters // layout.n_windows
        positions = counters % layout.n_windows
        if epochs[0] == epochs[-1]:
            order = self._order(d, int(epochs[0]))
            return layout.rows(order, order.permutation[positions])
        starts = np.empty(counters.size, dtype=np.int64)
        lengths = np.empty(counters.size, dtype=np.int64)
        for e in np.unique(epochs).tolist():
            sel = epochs == e
            order = self._order(d, e)
            starts[sel], lengths[sel] = layout.rows(order, order.permutation[positions[sel]])
        return starts, lengths

    def _order(self, d: int, epoch: int) -> EpochOrder:
        """Domain d's epoch order, cached for the current epoch (recomputed, never stored)."""
        cached = self._orders.get(d)
        if cached is None or cached.epoch != epoch:
            cached = self._layouts[d].epoch_order(self.seed, d, epoch)
            self._orders[d] = cached
        return cached

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything that determines the batches to come; small and JSON-serialisable."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "batch": self._batch,
            "counters": {name: int(c) for name, c in zip(self.domains, self._counters)},
            "weights": {name: float(p) for name, p in zip(self.domains, self._base_probs())},
            "schedule": None if self.schedule is None else self.schedule.describe(),
            "capped_at": dict(self._capped_at),
            "mode": self.mode,
            "seq_len": self.seq_len,
            "global_rows": self.global_rows,
            "split": self.split,
            "fingerprint": self.data.fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any], *, allow_fingerprint_change: bool = False) -> None:
        """Continue exactly where the saved loader stopped.

        Refuses (DataError naming what differs) a state saved with another seq_len, mode, global
        batch size or split, or on other prepared data unless `allow_fingerprint_change`; then
        counters and weights of domains no longer present are dropped and new domains start at 0
        (weight 0 too). The saved seed replaces the constructor's: the state alone fixes the order.
        A state saved with other mixture stages (or none, or stages where this loader has none) is
        refused: the curriculum is part of the data order. States older than stages load unchanged.
        """
        if not isinstance(state, dict):
            raise DataError(f"loader state must be a dict, not {type(state).__name__}", hint="use a checkpoint's state")
        required = ("seed", "batch", "counters", "weights", "mode", "seq_len", "global_rows", "split", "fingerprint")
        missing = [k for k in required if k not in state]
        if missing:
            raise DataError(
                f"loader state lacks {', '.join(missing)}",
                hint="the checkpoint was not written by this loader; start a fresh run",
            )
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise DataError(
                f"loader state version {state.get('version')!r} is not {STATE_VERSION}",
                hint="resume with the pretrainlab version that wrote the checkpoint",
            )
        current = {"seq_len": self.seq_len, "mode": self.mode, "global_rows": self.global_rows, "split": self.split}
        differ = [f"{key}: saved {state[key]!r}, now {value!r}" for key, value in current.items() if state[key] != value]
        if differ:
            raise DataError(
                "the saved loader state does not match this loader (" + "; ".join(differ) + ")",
                hint="resume with the data settings the run was started with (data.seq_len, data.mode, "
                "train.global_batch_tokens), or start a new run",
            )
        if state["fingerprint"] != self.data.fingerprint and not allow_fingerprint_change:
            raise DataError(
                f"the prepared data changed since the state was saved (fingerprint {str(state['fingerprint'])[:12]}… "
                f"then, {self.data.fingerprint[:12]}… now in {self.data.path})",
                hint="point data.path at the original folder, or set data.allow_fingerprint_change=true "
                "to continue on the new data",
            )
        counters = state["counters"]
        weights = state["weights"]
        if not isinstance(counters, dict) or not isinstance(weights, dict):
            raise DataError("loader state: counters and weights must be mappings by domain")
        if not allow_fingerprint_change:
            unknown = sorted(set(counters) - set(self.domains))
            if unknown:
                raise DataError(f"loader state names unknown domain {unknown[0]!r}", hint="start a fresh run")
        known = {name: w for name, w in weights.items() if name in self.domains}
        probs = normalise_weights(known, self.domains, usable=self._usable, where="saved loader weights")
        if set(known) == set(self.domains):
            # The saved vector is already normalised; renormalising could move its last bits.
            probs = np.asarray([float(known[name]) for name in self.domains], dtype=np.float64)
        new_counters = []
        for name in self.domains:
            c = counters.get(name, 0)
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise DataError(f"loader state: counter of domain {name!r} is {c!r}, not an integer >= 0")
            new_counters.append(c)
        batch = state["batch"]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise DataError(f"loader state: batch is {batch!r}, not an integer >= 0")
        _check_seed(state["seed"])
        saved_schedule = state.get("schedule")
        mine = None if self.schedule is None else self.schedule.describe()
        if saved_schedule != mine:
            raise DataError(
                f"the saved loader state was drawn with data.stages {_stages_text(saved_schedule)}, "
                f"this loader has {_stages_text(mine)}",
                hint="resume with the data.stages, train.steps and train.global_batch_tokens the run was started "
                "with (until_fraction depends on train.steps), or start a new run with init_from",
            )
        capped_at = state.get("capped_at") or {}
        if not isinstance(capped_at, dict):
            raise DataError("loader state: capped_at must be a mapping by domain")

        self.seed = int(state["seed"])
        self._batch = batch
        self._counters = new_counters
        self._probs = probs
        self._orders = {}
        self._capped_at = {name: int(t) for name, t in capped_at.items() if name in self.domains}
        self._last_probs = None


def _stages_text(described: dict[str, Any] | None) -> str:
    if described is None:
        return "none"
    return f"with bounds {described['bounds']} and weights {described['weights']}"


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0 (got {seed!r})", hint="set seed to e.g. 0")


def _check_arguments(
    seq_len: int, global_rows: int, seed: int, mode: str, rank: int, world_size: int, split: str
) -> None:
    if mode not in _MODES:
        raise ConfigError(f"data.mode must be one of {', '.join(_MODES)} (got {mode!r})")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    if int(seq_len) < 1:
        raise ConfigError(f"data.seq_len must be >= 1 (got {seq_len})")
    if int(global_rows) < 1:
        raise ConfigError(f"the global batch must have at least one row (got {global_rows})")
    if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
        raise ConfigError(f"rank {rank} is not in a world of {world_size} processes")
    if int(global_rows) % int(world_size):
        raise ConfigError(
            f"the global batch of {global_rows} rows does not split evenly over {world_size} processes",
            hint="make train.global_batch_tokens / data.seq_len a multiple of the number of processes",
        )
    _check_seed(seed)
