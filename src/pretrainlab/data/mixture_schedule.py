"""A data curriculum: domain weights as a pure function of the training tokens seen before a batch.

`data.stages` lists mixture stages in order; stage i is in force until its bound (`until_tokens`, or
`until_fraction` of the run's `train.steps x train.global_batch_tokens` tokens, rounded to the nearest
token), the last to the end. A switch happens at a batch boundary: global batch b (whose first token
has index `b x tokens_per_batch`) uses the first stage whose bound is above that index, so a bound T
that is not a multiple of the batch's tokens takes effect at the next batch boundary,
`ceil(T / tokens_per_batch)` batches in. This is the two-stage recipe of daVinci-LLM (a broad mixture,
then a mixture shifted towards the target data) and the warm-up stage of procedural pretraining.

The schedule holds no state: the loader asks it for the weights of every batch from the batch number
alone, so a resumed run draws exactly what the original would have.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pretrainlab.config import MixtureStage
from pretrainlab.data.sampling import normalise_weights
from pretrainlab.errors import ConfigError


@dataclass(frozen=True)
class MixtureSchedule:
    """Mixture stages resolved against a run: token bounds and one probability vector per stage.

    `bounds[i]` is the first token index at which stage i + 1 is in force (strictly increasing, all
    inside the run); `probs[i]` is stage i's probability vector over `domains` (manifest order);
    `weights[i]` is the stage's mapping as configured (the loader re-checks it against the rows
    each domain can supply).
    """

    domains: tuple[str, ...]
    bounds: tuple[int, ...]
    probs: tuple[np.ndarray, ...]
    weights: tuple[dict[str, float], ...]

    @classmethod
    def from_stages(
        cls,
        stages: Sequence[MixtureStage | Mapping[str, Any]],
        *,
        domains: Sequence[str],
        steps: int,
        tokens_per_batch: int,
    ) -> "MixtureSchedule":
        """Resolve `data.stages` for a run of `steps` batches of `tokens_per_batch` tokens.

        ConfigError (naming `data.stages.<i>...`) when bounds do not increase, fall outside the run, or
        leave a stage no batch; DataError (naming `data.stages.<i>.weights`) for a bad weight mapping.
        """
        parsed = [_stage(s, i) for i, s in enumerate(stages)]
        if not parsed:
            raise ConfigError("data.stages is empty", hint="give at least one stage, or use data.weights")
        bounds = resolve_bounds(parsed, steps=steps, tokens_per_batch=tokens_per_batch)
        names = list(domains)
        probs = tuple(
            normalise_weights(s.weights, names, usable=dict.fromkeys(names, True), where=f"data.stages.{i}.weights")
            for i, s in enumerate(parsed)
        )
        return cls(tuple(names), tuple(bounds), probs, tuple(dict(s.weights) for s in parsed))

    @property
    def n_stages(self) -> int:
        return len(self.probs)

    def stage_at(self, tokens_before_batch: int) -> int:
        """The index of the stage in force for a batch whose first token has this index."""
        return bisect.bisect_right(self.bounds, tokens_before_batch)

    def weights_at(self, tokens_before_batch: int) -> np.ndarray:
        """The probability vector over `domains` for a batch whose first token has this index."""
        return self.probs[bisect.bisect_right(self.bounds, tokens_before_batch)]

    def describe(self) -> dict[str, Any]:
        """Bounds and each stage's non-zero probabilities by domain: what a checkpoint records so that a
        resume with other stages is refused rather than silently drawing another curriculum."""
        return {
            "bounds": list(self.bounds),
            "weights": [{d: float(p) for d, p in zip(self.domains, probs) if p > 0} for probs in self.probs],
        }


def resolve_bounds(
    stages: Sequence[MixtureStage | Mapping[str, Any]], *, steps: int, tokens_per_batch: int
) -> list[int]:
    """The token bound of every stage but the last, checked: strictly increasing, and each stage in
    force for at least one of the run's `steps` batches of `tokens_per_batch` tokens."""
    parsed = [_stage(s, i) for i, s in enumerate(stages)]
    total = int(steps) * int(tokens_per_batch)
    bounds: list[int] = []
    for i, stage in enumerate(parsed[:-1]):
        if stage.until_tokens is not None:
            bound, field = int(stage.until_tokens), f"data.stages.{i}.until_tokens"
        elif stage.until_fraction is not None:
            bound, field = round(stage.until_fraction * total), f"data.stages.{i}.until_fraction"
        else:
            raise ConfigError(f"data.stages.{i} has no bound", hint="give every stage but the last until_tokens or "
                              "until_fraction")
        shown = f"{field}={stage.until_tokens if stage.until_tokens is not None else stage.until_fraction}"
        if bounds and bound <= bounds[-1]:
            raise ConfigError(
                f"{shown} ends stage {i} at token {bound:,}, not after stage {i - 1}'s end at token {bounds[-1]:,}",
                hint="stage bounds must increase strictly: list the stages in training order",
            )
        if bound >= total:
            raise ConfigError(
                f"{shown} ends stage {i} at token {bound:,}, at or after the run's end ({steps} steps x "
                f"{tokens_per_batch:,} tokens = {total:,}): stage {i + 1} would never run",
                hint="lower the bound, raise train.steps, or drop the stages that cannot run",
            )
        first_batch = switch_batch(bound, tokens_per_batch)
        previous = switch_batch(bounds[-1], tokens_per_batch) if bounds else 0
        if first_batch <= previous or first_batch >= steps:
            raise ConfigError(
                f"{shown} ends stage {i} at token {bound:,}, which leaves stage {i if first_batch <= previous else i + 1} "
                f"no batch of {tokens_per_batch:,} tokens (stages switch at batch boundaries)",
                hint="space the bounds at least one global batch (train.global_batch_tokens) apart",
            )
        bounds.append(bound)
    return bounds


def switch_batch(bound: int, tokens_per_batch: int) -> int:
    """The first global batch (0-based) drawn with the next stage: its first token index is >= bound."""
    return -(-int(bound) // int(tokens_per_batch))


def _stage(stage: MixtureStage | Mapping[str, Any], i: int) -> MixtureStage:
    if isinstance(stage, MixtureStage):
        return stage
    from pydantic import ValidationError

    try:
        return MixtureStage.model_validate(stage)
    except ValidationError as e:
        problem = e.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ()))
        raise ConfigError(
            f"data.stages.{i}{'.' + where if where else ''}: {problem.get('msg')}",
            hint="a stage is {weights: {domain: w}, until_tokens: N} or {weights: ..., until_fraction: f}",
        ) from None

