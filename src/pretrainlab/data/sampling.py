"""Domain mixture: validated weights and counter-based per-batch domain draws.

The draw for global batch `b` uses a generator seeded by `(seed, b, salt)` and nothing else, so a
batch's domains depend only on the batch number and the weights in force (no hidden RNG state to
save; the idea of counter-based streams as in Philox/JAX PRNG keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from pretrainlab.errors import DataError

# A 64-bit constant ("mixture!") keeps the mixture stream apart from the per-(domain, epoch) streams,
# which are seeded by three small integers too.
MIXTURE_SALT = 0x6D69787475726521


def normalise_weights(
    weights: Mapping[str, float], domains: list[str], *, usable: Mapping[str, bool], where: str = "weights"
) -> np.ndarray:
    """A probability vector over `domains` (manifest order) from a {domain: weight} mapping.

    Domains the mapping leaves out get weight 0. Unknown names, negative or non-finite values, an
    all-zero mapping, and a positive weight on a domain that cannot supply one row are DataErrors.
    """
    if not isinstance(weights, Mapping):
        raise DataError(f"{where} must be a mapping of domain -> weight, not {type(weights).__name__}")
    unknown = [name for name in weights if name not in domains]
    if unknown:
        raise DataError(
            f"{where} names unknown domain {unknown[0]!r}; the data has: {', '.join(domains)}",
            hint="use one of those domain names (see the prepared folder's manifest.json)",
        )
    values = np.zeros(len(domains), dtype=np.float64)
    for i, name in enumerate(domains):
        raw = weights.get(name, 0.0)
        try:
            w = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}[{name!r}] is {raw!r}, not a number", hint="give a weight >= 0") from None
        if not math.isfinite(w) or w < 0:
            raise DataError(f"{where}[{name!r}] is {raw!r}; weights must be finite and >= 0", hint="give a weight >= 0")
        values[i] = w
    total = float(values.sum())
    if total <= 0:
        raise DataError(f"{where}: every domain has weight 0", hint="give at least one domain a weight > 0")
    for i, name in enumerate(domains):
        if values[i] > 0 and not usable[name]:
            raise DataError(
                f"domain {name!r} is too small for one row at this seq_len, yet has weight {values[i]:g}",
                hint=f"set its weight to 0 ({where}.{name}=0), lower data.seq_len, or add data to it",
            )
    return values / total


def draw_domains(seed: int, batch: int, probs: np.ndarray, n_rows: int) -> np.ndarray:
    """The domain index of each of the `n_rows` rows of global batch `batch` (inverse-CDF sampling).

    A zero-probability domain is never drawn: its CDF step is empty.
    """
    rng = np.random.default_rng([seed, batch, MIXTURE_SALT])
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    u = rng.random(n_rows)
    return np.minimum(np.searchsorted(cdf, u, side="right"), probs.size - 1).astype(np.int64)
