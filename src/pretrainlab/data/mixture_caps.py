"""Repetition caps: a domain stops being drawn once it has served `data.max_epochs` epochs of its rows.

Repeating a small domain many times stops helping and starts hurting (Muennighoff et al. 2023, "Scaling
Data-Constrained Language Models": up to ~4 epochs cost little, beyond that the value of repeated tokens
decays fast). The cap is checked before every global batch: a domain whose window counter has reached
`cap x windows_per_epoch` gets probability 0 and the others are renormalised, so it overshoots its cap by
less than one global batch's rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pretrainlab.errors import ConfigError


def epoch_caps(max_epochs: float | Mapping[str, float] | None, domains: Sequence[str]) -> np.ndarray | None:
    """`data.max_epochs` as one cap in epochs per domain (inf where uncapped); None when nothing is capped.

    An unknown domain name or a cap that is not a number > 0 is a ConfigError naming `data.max_epochs`.
    """
    if max_epochs is None:
        return None
    if isinstance(max_epochs, Mapping):
        unknown = [name for name in max_epochs if name not in domains]
        if unknown:
            raise ConfigError(
                f"data.max_epochs names unknown domain {unknown[0]!r}; the data has: {', '.join(domains)}",
                hint="use one of those domain names (see the prepared folder's manifest.json)",
            )
        given = {name: (f"data.max_epochs.{name}", value) for name, value in max_epochs.items()}
    else:
        given = {name: ("data.max_epochs", max_epochs) for name in domains}
    caps = np.full(len(domains), math.inf)
    for i, name in enumerate(domains):
        if name not in given:
            continue
        field, value = given[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
            raise ConfigError(f"{field} is {value!r}; a cap is a number of epochs > 0",
                              hint="e.g. data.max_epochs=4, or remove it for no cap")
        caps[i] = float(value)
    return caps if np.isfinite(caps).any() else None


def without_capped(probs: np.ndarray, capped: np.ndarray) -> np.ndarray | None:
    """`probs` with the capped domains at 0 and the rest renormalised; `probs` itself when no domain it
    draws from is capped (the uncapped draws stay bit-identical); None when every such domain is capped."""
    hit = capped & (probs > 0)
    if not hit.any():
        return probs
    live = np.where(capped, 0.0, probs)
    total = float(live.sum())
    return live / total if total > 0 else None
