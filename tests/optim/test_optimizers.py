"""Optimiser builders: weight-decay groups, registry, fused AdamW."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainlab.config import OptimConfig
from pretrainlab.errors import ConfigError
from pretrainlab.optim import OPTIMIZERS, build_optimizer, param_groups, register_optimizer


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4, bias=True)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: must appear once


def decay_of(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}


def test_default_decays_matrices_only() -> None:
    m = Tiny()
    opt = build_optimizer(m, OptimConfig(weight_decay=0.1))
    assert decay_of(opt, m) == {
        "embed.weight": 0.1,
        "proj.weight": 0.1,
        "proj.bias": 0.0,
        "norm.weight": 0.0,
        "norm.bias": 0.0,
    }
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("mode, expected", [("all", 0.1), ("none", 0.0)])
def test_decay_modes(mode: str, expected: float) -> None:
    m = Tiny()
    assert set(decay_of(build_optimizer(m, OptimConfig(weight_decay=0.1, decay=mode)), m).values()) == {expected}


def test_frozen_parameters_are_left_out() -> None:
    m = Tiny()
    m.norm.requires_grad_(False)
    names = [n for g in param_groups(m, weight_decay=0.1) for n in g["param_names"]]
    assert "norm.weight" not in names and "proj.bias" in names


def test_decay_only_shrinks_matrices_in_a_step() -> None:
    m = Tiny()
    opt = build_optimizer(m, OptimConfig(lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decay can move a parameter
    opt.step()
    after = dict(m.named_parameters())
    assert not torch.equal(after["proj.weight"], before["proj.weight"])
    assert torch.equal(after["proj.bias"], before["proj.bias"])
    assert torch.equal(after["norm.weight"], before["norm.weight"])


def test_unknown_optimizer_suggests_and_registry_extends() -> None:
    with pytest.raises(ConfigError, match="optim.name.*'adamw'"):
        build_optimizer(Tiny(), OptimConfig(name="adamW"))
    if "sgd_test" not in OPTIMIZERS:
        register_optimizer("sgd_test")(lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr))
    assert isinstance(build_optimizer(Tiny(), OptimConfig(name="sgd_test")), torch.optim.SGD)


def test_bad_optimizer_option_is_config_error() -> None:
    with pytest.raises(ConfigError, match="optim.options"):
        build_optimizer(Tiny(), OptimConfig(options={"momentum": 0.9}))
