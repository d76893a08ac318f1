"""Low-rank training tricks (Glentis et al. 2025): refactorisation keeps the forward (1e-5, fp32) and balances
||B||_F = ||A||_F; momentum reset zeroes exactly the chosen moments; a run with both resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.recipes.low_rank_tricks import low_rank_layers, refactorize, refactorize_factors
from pretrainlab.train.callbacks import Callback
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

LOW_RANK = {"n_layers": 2, "d_model": 32, "n_heads": 2, "linear": "low_rank",
            "linear_options": {"rank": 8, "alpha": 4}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    return make_prepared(tmp_path_factory.mktemp("lrt") / "prepared", train={"a": markov_docs(rng, 40)},
                         val={"a": markov_docs(rng, 4)})


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- refactorisation


@pytest.mark.parametrize("linear", ["low_rank", "sparse_low_rank"])
def test_refactorisation_keeps_the_forward_and_balances_the_factors(linear):
    torch.manual_seed(0)
    options = {"rank": 8, "alpha": 4} if linear == "low_rank" else {"rank": 8, "density": 0.1}
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, vocab_size=50, max_seq_len=16, linear=linear,
                      linear_options=options)
    model = build_model(resolve_model_config(cfg, vocab_size=50, seq_len=16)).eval()
    with torch.no_grad():  # unbalanced factors, as training leaves them
        for _, m in low_rank_layers(model):
            m.B.normal_(0, 1.0).mul_(5.0)
            m.A.mul_(0.2)
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.logits(model(tokens))
        weights = {n: m.effective_weight().clone() for n, m in low_rank_layers(model)}
    assert refactorize(model) == 8
    with torch.no_grad():
        after = model.logits(model(tokens))
    diff = (after - before).abs().max().item()
    print(f"{linear}: refactorisation max |logit difference| {diff:.2e}")
    assert diff < 1e-5
    for n, m in low_rank_layers(model):
        assert torch.allclose(m.effective_weight(), weights[n], atol=1e-5), n
        nb, na = float(m.B.detach().norm()), float(m.A.detach().norm())
        assert nb == pytest.approx(na, rel=1e-5), n
        gram_b, gram_a = (m.B.T @ m.B).detach(), (m.A @ m.A.T).detach()  # both diag(S): orthogonal
        assert torch.allclose(gram_b, torch.diag(torch.diagonal(gram_b)), atol=1e-4 * float(gram_b.max()))
        assert torch.allclose(gram_b, gram_a, rtol=1e-4, atol=1e-4 * float(gram_b.max()))


def test_a_zero_product_is_left_alone():
    B, A = torch.zeros(6, 2), torch.randn(2, 5)
    assert refactorize_factors(B, A) is None


# ---------------------------------------------------------------------- momentum reset


def _state(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {n: trainer.optimizer.state[p] for n, p in trainer.module.named_parameters() if p in trainer.optimizer.state}


@pytest.mark.parametrize(("options", "zero_first", "zero_second"), [
    ({"every": 3}, "factors", "factors"),
    ({"every": 3, "second": False}, "factors", "none"),
    ({"every": 3, "scope": "all"}, "all", "all"),
    ({"every": 3, "all": True, "second": False}, "all", "none"),
])
def test_momentum_reset_zeroes_exactly_the_chosen_moments(data, tmp_path, options, zero_first, zero_second):
    cfg = tiny_run_config(tmp_path, data, model=LOW_RANK, train={"steps": 3},
                          callbacks=[{"name": "momentum_reset", "options": options}], eval={"every": None})
    trainer = Trainer(cfg)
    trainer.fit()
    state = _state(trainer)
    assert len(state) == 22
    factors = {n for n in state if n.endswith((".A", ".B"))}
    assert len(factors) == 16

    def chosen(which: str) -> set[str]:
        return {"factors": factors, "all": set(state), "none": set()}[which]

    for n, s in state.items():
        assert (torch.count_nonzero(s["exp_avg"]) == 0) == (n in chosen(zero_first)), n
        assert (torch.count_nonzero(s["exp_avg_sq"]) == 0) == (n in chosen(zero_second)), n
        assert float(s["step"]) == 3.0  # the step count is kept (reset_step: false)
    last_train_line = [r for r in _lines(tmp_path / "tiny") if "lr" in r][-1]
    assert last_train_line["momentum_reset"] == len(chosen(zero_first))


def test_momentum_reset_step_and_options_are_checked(data, tmp_path):
    cfg = tiny_run_config(tmp_path, data, model=LOW_RANK, train={"steps": 2}, eval={"every": None},
                          callbacks=[{"name": "momentum_reset", "options": {"every": 2, "reset_step": True}}])
    trainer = Trainer(cfg)
    trainer.fit()
    assert all(float(s["step"]) == (0.0 if n.endswith((".A", ".B")) else 2.0) for n, s in _state(trainer).items())
    for name, options, match in [
        ("momentum_reset", {"every": 0}, r"callbacks\.0\.options\.every: every=0"),
        ("momentum_reset", {"scope": "some"}, r"callbacks\.0\.options\.scope: scope='some'"),
        ("momentum_reset", {"scope": "all", "all": False}, r"callbacks\.0\.options\.scope: scope=all and all=false"),
        ("refactorize", {"every": 1.5}, r"callbacks\.0\.options\.every: every=1\.5"),
        ("refactorize", {"period": 3}, r"callbacks\.0\.options"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Trainer(tiny_run_config(tmp_path, data, name="bad", callbacks=[{"name": name, "options": options}]))


class _AdamWithout(torch.optim.AdamW):
    """AdamW that declares (optim/state_check.py `state_shapes`) a state without some moments: `drop` for
    every parameter, or for the B factors only (`only_b`)."""

    drop: tuple[str, ...] = ()
    only_b = False

    def state_shapes(self, p, group):
        shape = tuple(p.shape)
        out = {"step": (), "exp_avg": shape, "exp_avg_sq": shape}
        if not self.only_b or shape[1] == 8:  # B (out, r = 8); A is (8, in)
            out = {k: v for k, v in out.items() if k not in self.drop}
        return out


def _with_optimizer(trainer: Trainer, optimizer: torch.optim.Optimizer) -> Trainer:
    trainer.optimizer = optimizer
    return trainer


@pytest.mark.parametrize(("options", "drop", "only_b", "field", "lacks"), [
    ({}, ("exp_avg",), False, "scope", "exp_avg"),
    ({"scope": "all"}, ("exp_avg", "exp_avg_sq"), False, "scope", "exp_avg and exp_avg_sq"),
    ({}, ("exp_avg_sq",), False, "second", "exp_avg_sq"),
])
def test_momentum_reset_checks_the_optimiser_keeps_the_moments(data, tmp_path, options, drop, only_b, field, lacks):
    cfg = tiny_run_config(tmp_path, data, model=LOW_RANK, train={"steps": 2}, eval={"every": None},
                          callbacks=[{"name": "momentum_reset", "options": {"every": 1, **options}}])
    trainer = Trainer(cfg)
    opt = _AdamWithout(trainer.optimizer.param_groups)
    opt.drop, opt.only_b = drop, only_b
    with pytest.raises(ConfigError, match=rf"callbacks\.0\.options\.{field}: momentum_reset resets {lacks} of the "
                       r"chosen parameters .* which optim\.name=adamw \(_AdamWithout\) does not keep for any of them"):
        _with_optimizer(trainer, opt).fit()
    sgd = Trainer(cfg.model_copy(update={"name": "sgd"}))
    with pytest.raises(ConfigError, match=r"callbacks\.0\.options\.scope: .* \(SGD\) does not keep"):
        _with_optimizer(sgd, torch.optim.SGD(sgd.optimizer.param_groups, lr=0.1, momentum=0.9)).fit()


def test_momentum_reset_warns_once_when_only_some_parameters_have_moments(data, tmp_path, capsys):
    cfg = tiny_run_config(tmp_path, data, model=LOW_RANK, train={"steps": 2}, eval={"every": None},
                          callbacks=[{"name": "momentum_reset", "options": {"every": 1}}])
    trainer = Trainer(cfg)
    opt = _AdamWithout(trainer.optimizer.param_groups)
    opt.drop, opt.only_b = ("exp_avg_sq",), True
    _with_optimizer(trainer, opt).fit()
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "callbacks.0 (momentum_reset, scope=low_rank): 8 of 16 chosen parameters" in warnings[0]
    assert "blocks.0.attn.qkv.B (exp_avg_sq)" in warnings[0] and "and 5 more" in warnings[0]


@pytest.mark.parametrize("name", ["refactorize", "momentum_reset"])
def test_a_dense_model_is_refused_naming_the_linear(data, tmp_path, name):
    trainer = Trainer(tiny_run_config(tmp_path, data, callbacks=[{"name": name}], train={"steps": 2}))
    with pytest.raises(ConfigError, match=rf"callback '{name}': the model has no low-rank layers "
                                          r"\(model\.linear='dense'\)"):
        trainer.fit()


# ---------------------------------------------------------------------- together, and exact resume


class _StopAt(Callback):
    name = "test_stop"

    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, metrics):
        if trainer.step == self.at:
            trainer.request_stop("test")


def test_run_with_both_resumes_exactly(data, tmp_path):
    def cfg(name: str):
        return tiny_run_config(tmp_path, data, name=name, model=LOW_RANK, train={"steps": 8, "deterministic": True},
                               optim={"lr": 1e-2}, eval={"every": None},
                               callbacks=[{"name": "refactorize", "options": {"every": 3}},
                                          {"name": "momentum_reset", "options": {"every": 3}}])

    whole = train_run(cfg("whole"))
    first = Trainer(cfg("split"))
    first.callbacks.append(_StopAt(4))  # stops after step 4 (between the events of steps 3 and 6)
    first.fit()
    Trainer(cfg("split"), resume=True).fit()
    keys = ("step", "loss", "grad_norm", "refactorized", "momentum_reset")
    a = [{k: r.get(k) for k in keys} for r in _lines(whole) if "lr" in r]
    b = [{k: r.get(k) for k in keys} for r in _lines(tmp_path / "split") if "lr" in r]
    assert a == b  # bitwise
    assert [r["step"] for r in a if r["refactorized"] is not None] == [3, 6] and a[2]["refactorized"] == 8
    assert a[2]["momentum_reset"] == 16
