"""Per-domain validation losses on a bounded window set: the numbers `evaluate` gives under the same cap, a
hand-computed bigram loss, repeatable, no RNG drawn, one clear error for a domain without validation data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import BYTE_VOCAB, make_prepared, random_docs, tiny_run_config
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import DataError
from pretrainlab.eval.domain_losses import DomainLosses, domain_losses
from pretrainlab.eval.evaluate import evaluate

CPU = torch.device("cpu")


class Bigram(nn.Module):
    def __init__(self, vocab: int = BYTE_VOCAB) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))
        self.drop = nn.Dropout(0.5)  # would draw random numbers in train mode

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.drop(self.table[tokens])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def test_same_numbers_as_evaluate_under_the_same_cap(tiny_prepared: Path) -> None:
    data = PreparedData(tiny_prepared)
    model = Bigram()
    meter = DomainLosses(data, seq_len=16, tokens_per_domain=300, batch_size=4)
    ours = meter.measure(model, device=CPU)
    ref = evaluate(model, data, seq_len=16, max_tokens_per_domain=300, batch_size=4, device=CPU, autocast_dtype=None)
    assert list(ours) == ["alpha", "beta"]
    for d in ours:
        assert ours[d] == ref[f"val_loss/{d}"]
    assert [w.n_targets for w in meter.windows] == [300, 300]  # bounded: the first 300 targets of each domain


def test_hand_computed_loss_repeatable_and_no_rng_drawn(tmp_path: Path) -> None:
    docs = {"a": [[1, 2, 3, 4, 5, 6]], "b": [[7, 7, 7]]}
    data = PreparedData(make_prepared(tmp_path / "p", train=docs, val=docs))
    model = Bigram()
    model.train()
    meter = DomainLosses(data, seq_len=4, tokens_per_domain=4, domains=["b"])
    before = torch.get_rng_state()
    first = meter.measure(model, device=CPU)
    assert torch.equal(before, torch.get_rng_state()) and model.training  # mode restored, nothing drawn
    assert meter.measure(model, device=CPU) == first
    table = model.table.detach().double().numpy()
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    tokens = [7, 7, 7, 256]  # the document and its end-of-text: 3 targets (the cap of 4 is not reached)
    expected = -np.mean([logp[a, b] for a, b in zip(tokens[:-1], tokens[1:])])
    assert math.isclose(first["b"], expected, rel_tol=1e-6)


def test_bad_domains_and_sizes_are_clear_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = PreparedData(make_prepared(tmp_path / "p", train={"a": random_docs(rng, 5), "b": random_docs(rng, 5)},
                                      val={"a": random_docs(rng, 2)}))
    with pytest.raises(DataError, match="domain 'b' .* has no val tokens"):
        DomainLosses(data, seq_len=8, tokens_per_domain=64)
    with pytest.raises(DataError, match="'c' is not in"):
        DomainLosses(data, seq_len=8, tokens_per_domain=64, domains=["c"])
    with pytest.raises(ValueError, match="tokens_per_domain"):
        DomainLosses(data, seq_len=8, tokens_per_domain=0, domains=["a"])
    assert list(DomainLosses(data, seq_len=8, tokens_per_domain=64, domains=["a"]).measure(Bigram(), device=CPU)) == ["a"]


def test_of_a_trainer(tiny_prepared: Path, tmp_path: Path) -> None:
    from pretrainlab.train.trainer import Trainer

    trainer = Trainer(tiny_run_config(tmp_path / "runs", tiny_prepared))
    losses = domain_losses(trainer, 128)
    assert set(losses) == {"alpha", "beta"}
    assert all(math.log(BYTE_VOCAB) - 1 < v < math.log(BYTE_VOCAB) + 1 for v in losses.values())  # untrained
