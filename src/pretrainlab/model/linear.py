"""Linear layers (registry `linear`): every attention and MLP projection is built through here."""

from __future__ import annotations

from typing import Any

from torch import nn

from pretrainlab.errors import ConfigError
from pretrainlab.model.registries import LINEARS


@LINEARS.register("dense")
def dense(in_features: int, out_features: int, bias: bool, options: dict[str, Any]) -> nn.Module:
    """A plain `nn.Linear`; it takes no options."""
    if options:
        raise ConfigError(
            f"model.linear_options={options!r}: linear 'dense' takes no options",
            hint="remove model.linear_options or choose a model.linear that uses them",
        )
    return nn.Linear(in_features, out_features, bias=bias)
