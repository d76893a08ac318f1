"""The `mixture` sweep axis: data mixtures drawn from a Dirichlet over the domains' simplex.

RegMix (Liu et al. 2024) and CLIMB (Diao et al. 2025) search a data mixture by training small proxy
models on many mixtures drawn at random from a Dirichlet distribution and regressing validation loss on
the weights. This module draws such mixtures for `pretrainlab sweep`:

  axes:
    - mixture: {n: 16, alpha: 1.0, seed: 0, domains: [web, code, math], include_uniform: true,
                prior: {web: 2, code: 1, math: 1}}

Each point sets `data.weights`. The draw is Dirichlet(alpha * prior) (prior default 1 per domain, so
alpha = 1 is uniform over the simplex, alpha < 1 favours mixtures dominated by few domains, alpha > 1
mixtures near the prior's proportions), made with the standard library's seeded gamma variates (the same
seed gives the same mixtures on every platform and version). Weights are kept to 4 decimals that sum to
exactly 1 (largest remainder), so configs and point names stay short; a draw that rounds to a mixture
already drawn is drawn again, so the axis has n distinct points (plus the uniform mixture first with
`include_uniform`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from pydantic import Field, field_validator, model_validator

from pretrainlab.config import StrictModel
from pretrainlab.errors import ConfigError

DECIMALS = 4
WEIGHTS_KEY = "data.weights"
_UNITS = 10**DECIMALS
_MAX_DRAWS_PER_POINT = 100  # redraws of duplicates before the axis is declared unable to give n distinct points


class MixtureParams(StrictModel):
    """`mixture: {n, alpha, seed, domains, prior, include_uniform}` (see the module docstring)."""

    n: int = Field(ge=1, description="Mixtures drawn from the Dirichlet.")
    alpha: float = Field(default=1.0, gt=0, description="Concentration (times the prior).")
    seed: int = 0
    domains: list[str] | None = Field(
        default=None, description="The domains mixed (default: every domain of the base's prepared data)."
    )
    prior: dict[str, float] | None = Field(
        default=None, description="Relative concentration per domain (default 1 each); the draws' mean."
    )
    include_uniform: bool = Field(default=False, description="Add the equal-weights mixture as the first point.")

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) < 2:
                raise ValueError("a mixture needs at least 2 domains")
            if len(set(v)) != len(v):
                raise ValueError("domains lists a domain twice")
        return v

    @field_validator("prior")
    @classmethod
    def _prior(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            bad = [k for k, w in v.items() if not (math.isfinite(w) and w > 0)]
            if bad:
                raise ValueError(f"prior[{bad[0]!r}] must be a finite number > 0 (got {v[bad[0]]})")
        return v

    @model_validator(mode="after")
    def _prior_matches_domains(self) -> "MixtureParams":
        if self.prior is not None and self.domains is not None and set(self.prior) != set(self.domains):
            missing = [d for d in self.domains if d not in self.prior]
            extra = [d for d in self.prior if d not in self.domains]
            raise ValueError(
                "prior must give every domain of domains and no other ("
                + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                        f"not in domains {extra}" if extra else "") if p) + ")"
            )
        return self


class MixtureAxis(StrictModel):
    """`mixture: {...}`: n Dirichlet-drawn values of `data.weights`."""

    mixture: MixtureParams


def round_weights(weights: Sequence[float], decimals: int = DECIMALS) -> list[float]:
    """Non-negative weights as multiples of 10^-decimals that sum to exactly 1 (largest remainder).

    Raises ValueError for an empty, negative, non-finite or all-zero input.
    """
    if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0 (got {list(weights)})")
    units = 10**decimals
    total = math.fsum(weights)
    exact = [w / total * units for w in weights]
    floors = [math.floor(x) for x in exact]
    left = units - sum(floors)
    # the largest remainders get the units left; ties go to the earlier domain
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return [round(c / units, decimals) for c in floors]


def dirichlet_mixtures(
    domains: Sequence[str],
    n: int,
    *,
    alpha: float = 1.0,
    seed: int = 0,
    prior: Mapping[str, float] | None = None,
    include_uniform: bool = False,
) -> list[dict[str, float]]:
    """`n` distinct mixtures {domain: weight} drawn from Dirichlet(alpha * prior), rounded by `round_weights`;
    with `include_uniform` the equal-weights mixture comes first (n + 1 in all).

    Deterministic per (domains, n, alpha, seed, prior): the draws come from `random.Random(seed)`, and the
    first k mixtures of n are the k mixtures of a draw with n = k. A draw that rounds to a mixture already
    present is replaced by the next draw; ConfigError when n distinct mixtures cannot be found (too few
    domains, or alpha so small that every draw sits on a corner of the simplex).
    """
    domains = list(domains)
    if len(domains) < 2 or n < 1 or not alpha > 0:
        raise ConfigError(f"a mixture axis needs >= 2 domains, n >= 1 and alpha > 0 (got {len(domains)}, {n}, {alpha})")
    conc = [alpha * float(prior[d]) if prior is not None else alpha for d in domains]
    rng = random.Random(seed)
    out: list[dict[str, float]] = []
    seen: set[tuple[float, ...]] = set()
    if include_uniform:
        uniform = round_weights([1.0] * len(domains))
        out.append(dict(zip(domains, uniform)))
        seen.add(tuple(uniform))
    drawn = 0
    for _ in range(_MAX_DRAWS_PER_POINT * n):
        if drawn == n:
            break
        gammas = [rng.gammavariate(c, 1.0) for c in conc]
        if not sum(gammas) > 0:  # every variate underflowed (alpha far below 1): draw again
            continue
        point = tuple(round_weights(gammas))
        if point in seen:
            continue
        seen.add(point)
        out.append(dict(zip(domains, point)))
        drawn += 1
    if drawn < n:
        raise ConfigError(
            f"only {drawn} distinct mixtures of {len(domains)} domains found for n={n} at alpha={alpha:g}",
            hint="lower n or raise alpha (small alpha puts nearly every draw on a corner of the simplex)",
        )
    return out


def axis_domains(params: MixtureParams, data_path: str, *, where: str, check_data: bool) -> list[str]:
    """The axis' domains: its own list, or every domain of the prepared folder `data_path`."""
    if params.domains is not None:
        return list(params.domains)
    if not check_data:
        raise ConfigError(f"{where}: list the domains to mix (the prepared data is not read here)",
                          hint="e.g. mixture: {n: 8, domains: [web, code]}")
    from pretrainlab.data.prepared import PreparedData

    domains = list(PreparedData(data_path).domains)
    if len(domains) < 2:
        raise ConfigError(f"{where}: {data_path} has {len(domains)} domain(s) ({', '.join(domains)}); a mixture "
                          "needs at least 2", hint="prepare the data with sources in several domains")
    if params.prior is not None and set(params.prior) != set(domains):
        raise ConfigError(f"{where}.prior: give every domain of {data_path} and no other ({', '.join(domains)})")
    return domains


def check_weight_domains(weights: Mapping[str, float] | None, domains: Sequence[str], *, where: str) -> None:
    """ConfigError naming the first domain of `weights` that the prepared data does not have."""
    unknown = [d for d in (weights or {}) if d not in domains]
    if unknown:
        close = _close(unknown[0], domains)
        raise ConfigError(
            f"{where} names domain {unknown[0]!r}, which the prepared data does not have"
            + (f"; did you mean {close!r}?" if close else "") + f" (its domains: {', '.join(domains)})",
            hint="use the domain names of the prepared folder's manifest.json",
        )


def _close(name: str, choices: Sequence[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


__all__ = ["MixtureAxis", "MixtureParams", "WEIGHTS_KEY", "axis_domains", "check_weight_domains",
           "dirichlet_mixtures", "round_weights"]
