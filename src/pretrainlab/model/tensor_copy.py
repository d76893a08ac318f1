"""Copy a source's tensors into a model's state dict one at a time, checking names and shapes.

Shared by `init_from` (train/init_from.py: a source of the run's own parameterisation, tensor by tensor) and
`load_converted` (model/surgery.py: the tensors outside the converted projections), so both refuse the same
way: a tensor of another shape at once, then (after the last tensor) the source's tensors the model lacks,
then the model's tensors the source lacks, each a CheckpointError naming the tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from pretrainlab.errors import CheckpointError


class TensorCopier:
    """Copies into `expected` (a model's `state_dict()`: views of its parameters and buffers, so copying into
    them loads the model); `describe` names the source in messages."""

    def __init__(self, expected: Mapping[str, Tensor], describe: str) -> None:
        self.expected = expected
        self.describe = describe
        self.seen: set[str] = set()
        self.extra: list[str] = []

    @torch.no_grad()
    def copy(self, name: str, tensor: Tensor) -> bool:
        """Copy `tensor` into the model's tensor `name`; False (and remembered as extra) when it has none.
        CheckpointError when the shapes differ."""
        target = self.expected.get(name)
        if target is None:
            self.extra.append(name)
            return False
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{self.describe}: tensor {name!r} has shape {tuple(tensor.shape)}, the run's model "
                f"{tuple(target.shape)}",
                hint="leave the model's shape fields unset so init_from fills them from the source",
            )
        target.copy_(tensor)
        self.seen.add(name)
        return True

    def mark_loaded(self, names: Iterable[str]) -> None:
        """Count `names` as loaded by other means (e.g. a converted projection)."""
        self.seen.update(names)

    def raise_extra(self) -> None:
        """CheckpointError when the source held tensors the model lacks."""
        if self.extra:
            raise CheckpointError(f"{self.describe} holds tensors the run's model lacks: {', '.join(self.extra[:5])}",
                                  hint="the source was trained with other model components")

    def raise_missing(self) -> None:
        """CheckpointError when a tensor of the model was never loaded."""
        missing = [n for n in self.expected if n not in self.seen]
        if missing:
            raise CheckpointError(f"{self.describe} has no tensor {missing[0]!r}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                                  hint="the source does not hold a complete pretrainlab decoder")

    def finish(self) -> None:
        """After the last tensor: `raise_extra`, then `raise_missing`."""
        self.raise_extra()
        self.raise_missing()
