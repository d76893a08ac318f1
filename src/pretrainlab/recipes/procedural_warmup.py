"""Stage 2 of Procedural Pretraining (Jiang, Shinnick et al., ICML 2026, arXiv 2601.21725): the model
warmed up on procedural data starts natural-text training with its token embeddings re-initialised, so
what transfers is the transformer's layers (attention and MLPs), not the procedural vocabulary's rows.

    init_from: runs/dyck-warmup
    callbacks: [{name: reinit_embeddings}]

`reinit_embeddings` re-draws the token embedding (and an untied output head) as the model's own
initialisation does, N(0, model.init_std), from a generator seeded by the run's seed, at the start of a
fresh run only: a resumed run keeps the embedding its checkpoint holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

SEED_SALT = 0x5EED_E1B  # the embedding's draw differs from the run's other seeded streams


@register_callback("reinit_embeddings")
class ReinitEmbeddings(Callback):
    """At step 0, re-draw the token embedding (and the output head, when `head` and it is untied)."""

    def __init__(self, head: bool = True) -> None:
        if not isinstance(head, bool):
            raise ValueError(f"head={head!r} must be true or false")
        self.head = head

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.step > 0:  # resumed: the checkpoint holds the embedding trained since
            return
        if trainer.cfg.parallel == "fsdp":
            raise ConfigError("callbacks reinit_embeddings: not with parallel=fsdp (sharded embedding)",
                              hint="use parallel: ddp or none for the first steps of stage 2")
        model = trainer.module
        std = float(model.cfg.init_std)  # type: ignore[union-attr]
        gen = torch.Generator().manual_seed(int(trainer.cfg.seed) ^ SEED_SALT)
        weights = [model.embed.weight]  # type: ignore[union-attr]
        head = getattr(model, "head", None)
        if self.head and head is not None:
            weights.append(head.weight)
        with torch.no_grad():
            for w in weights:
                w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float32).mul_(std).to(w.dtype))
        say = getattr(trainer, "_say", print)
        say(f"reinit_embeddings: {', '.join(f'{tuple(w.shape)}' for w in weights)} re-drawn, "
                     f"N(0, {std:g})")
