"""`low_rank` (LowRankLinear): closed-form counts, init, options, truncation and Maestro's ordered dropout."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import tiny_run_config, train_run  # noqa: E402
from linear_common import killed_and_resumed, markov_prepared, norm_params, projections, train_lines  # noqa: E402

from pretrainlab.config import ModelConfig  # noqa: E402
from pretrainlab.errors import ConfigError  # noqa: E402
from pretrainlab.eval.hf_llama import unsupported_parts  # noqa: E402
from pretrainlab.model import build_model, count_parameters, flops_per_token, matmul_params  # noqa: E402
from pretrainlab.model import resolve_model_config  # noqa: E402
from pretrainlab.model.low_rank import (  # noqa: E402
    LowRankLinear,
    apply_ordered_dropout,
    clear_ordered_dropout,
    group_lasso,
    ordered_dropout_choice,
    truncate_rank,
)
from pretrainlab.train.callbacks import linear_callbacks  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, T = 258, 32


def resolved(linear: str = "low_rank", bias: bool = False, **options: Any) -> ModelConfig:
    return resolve_model_config(
        ModelConfig(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, linear=linear, linear_options=options,
                    bias=bias), vocab_size=VOCAB, seq_len=T)


@pytest.mark.parametrize("options", [{"rank": 8}, {"rank_fraction": 0.5, "alpha": 4.0}])
@pytest.mark.parametrize("bias", [False, True])
def test_parameter_counts_and_flops_are_closed_form(options: dict[str, Any], bias: bool) -> None:
    cfg = resolved(bias=bias, **options)
    r = options.get("rank") or round(options["rank_fraction"] * 32)
    shapes = projections(cfg)
    matmul = sum(r * (i + o) for i, o in shapes)
    counts = count_parameters(build_model(cfg), cfg)
    assert counts["params_non_embedding"] == matmul + norm_params(cfg) + (sum(o for _, o in shapes) if bias else 0)
    assert counts["params"] == counts["params_non_embedding"] + VOCAB * 32
    assert matmul_params(build_model(cfg)) == matmul + VOCAB * 32
    with torch.device("meta"):
        assert matmul_params(build_model(cfg)) == matmul + VOCAB * 32
    assert flops_per_token(cfg, T) == 6 * (matmul + VOCAB * 32) + 12 * 2 * 32 * T


def test_forward_is_the_effective_weight_and_alpha_scales_it() -> None:
    torch.manual_seed(0)
    layer = LowRankLinear(24, 40, bias=True, rank=6, alpha=3.0)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(5, 24)
    w = layer.effective_weight()
    assert torch.allclose(w, 0.5 * layer.B @ layer.A)
    assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-6)


def test_inits() -> None:
    torch.manual_seed(0)
    kaiming = LowRankLinear(64, 96, rank=16)
    assert kaiming.A.abs().max() <= 1 / math.sqrt(64) and kaiming.B.abs().max() <= 1 / math.sqrt(16)
    assert kaiming.B.abs().min() < kaiming.B.abs().max()
    zero_b = LowRankLinear(64, 96, rank=16, init="zero_b")
    assert torch.count_nonzero(zero_b.B) == 0 and torch.count_nonzero(zero_b.A) > 0
    normal = LowRankLinear(512, 512, rank=64, alpha=16.0, init="normal")
    normal.init_weights(0.02)
    assert abs(normal.effective_weight().std().item() / 0.02 - 1) < 0.1
    # Through the decoder: `normal` follows init_std and the residual scaling of the output projections.
    cfg = resolved(rank=16, init="normal")
    model = build_model(cfg)
    attn = model.blocks[0].attn
    assert abs(attn.qkv.effective_weight().std().item() / 0.02 - 1) < 0.2
    assert abs(attn.out.effective_weight().std().item() / (0.02 / math.sqrt(4)) - 1) < 0.2  # std / sqrt(2 L)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"rank": 0}, "rank"),
        ({"rank": 33}, "rank"),  # min(in, out) = 32
        ({"rank": 2.5}, "rank"),
        ({"rank_fraction": 0.0}, "rank_fraction"),
        ({"rank_fraction": 1.5}, "rank_fraction"),
        ({}, "rank"),
        ({"rank": 4, "rank_fraction": 0.5}, "rank_fraction"),
        ({"rank": 4, "alpha": -1}, "alpha"),
        ({"rank": 4, "init": "xavier"}, "init"),
        ({"rank": 4, "ordered_dropout": "yes"}, "ordered_dropout"),
        ({"rank": 4, "ordered_dropout": True, "od_prob": 2}, "od_prob"),
        ({"rank": 4, "ranks": 8}, "ranks"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"model\.linear_options\.{key}\b"):
        build_model(resolved(**options))


def test_option_names_are_checked_before_the_model_is_built(tmp_path: Path) -> None:
    cfg = tiny_run_config(tmp_path, tmp_path / "absent", model={"linear": "low_rank", "linear_options": {"rnk": 4}})
    with pytest.raises(ConfigError, match=r"model\.linear_options\.rnk"):
        linear_callbacks(cfg)
    ok = tiny_run_config(tmp_path, tmp_path / "absent",
                         model={"linear": "low_rank", "linear_options": {"rank": 4, "ordered_dropout": True}})
    assert linear_callbacks(ok) == ("ordered_dropout",)
    assert any("model.linear='low_rank'" in line for line in unsupported_parts(ok.model))  # no HF export


def test_truncate_rank() -> None:
    torch.manual_seed(0)
    cfg = resolved(rank_fraction=0.5, alpha=4.0)
    model = build_model(cfg).eval()
    x = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        ref = model(x)
        assert set(truncate_rank(model, 1000).values()) == {16}
        assert torch.allclose(model(x), ref, atol=1e-5)
        assert set(truncate_rank(model, 1.0).values()) == {16}
        assert torch.allclose(model(x), ref, atol=1e-5)
        # Half the rank: each layer keeps its first 8 components at the same scale.
        layer = model.blocks[1].mlp.down
        assert isinstance(layer, LowRankLinear)
        expected = 0.25 * layer.B[:, :8] @ layer.A[:8]
        kept = truncate_rank(model, 0.5)
        assert set(kept.values()) == {8} and len(kept) == 8
        assert layer.rank == 8 and layer.alpha == 2.0 and torch.allclose(layer.effective_weight(), expected)
        assert not torch.allclose(model(x), ref, atol=1e-3)
    n = count_parameters(model, cfg)["params_non_embedding"]
    assert n == sum(8 * (i + o) for i, o in projections(cfg)) + norm_params(cfg)
    with pytest.raises(ValueError):
        truncate_rank(build_model(resolved("dense")), 4)
    with pytest.raises(ValueError):
        truncate_rank(model, 0)


def test_group_lasso_is_the_hierarchical_penalty() -> None:
    torch.manual_seed(0)
    layer = LowRankLinear(6, 5, rank=4, ordered_dropout=True)
    a_rows, b_cols = layer.A.pow(2).sum(1), layer.B.pow(2).sum(0)
    naive = sum(a_rows[k:].sum().sqrt() + b_cols[k:].sum().sqrt() for k in range(4))
    assert torch.allclose(layer.group_lasso(), naive)
    zero_b = LowRankLinear(6, 5, rank=4, init="zero_b", ordered_dropout=True)
    group_lasso(zero_b).backward()
    assert torch.isfinite(zero_b.A.grad).all() and torch.isfinite(zero_b.B.grad).all()


def test_ordered_dropout_choice_walks_every_pair_once_per_pass() -> None:
    ranks = [3, 5, 2]
    picks = [ordered_dropout_choice(ranks, seed=7, step=s) for s in range(20)]
    expected = sorted((i, j) for i, r in enumerate(ranks) for j in range(1, r + 1))
    assert sorted(picks[:10]) == expected and sorted(picks[10:]) == expected  # type: ignore[type-var]
    assert picks == [ordered_dropout_choice(ranks, seed=7, step=s) for s in range(20)]
    assert picks != [ordered_dropout_choice(ranks, seed=8, step=s) for s in range(20)]
    some = [ordered_dropout_choice(ranks, seed=7, step=s, od_prob=0.5) for s in range(200)]
    assert 60 < sum(c is None for c in some) < 140


def test_ordered_dropout_truncates_one_layer_in_training_only() -> None:
    torch.manual_seed(0)
    model = build_model(resolved(rank=16, ordered_dropout=True))
    x = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        model.eval()
        full = model(x)
        # Step 1 of seed 0 truncates one layer to a width below its rank.
        step = next(s for s in range(100) if (c := ordered_dropout_choice([16] * 8, 0, s)) and c[1] < 16)
        name, width = apply_ordered_dropout(model, seed=0, step=step)  # type: ignore[misc]
        active = [n for n, m in model.named_modules() if isinstance(m, LowRankLinear) and m.active_rank is not None]
        assert active == [name] and width < 16
        assert torch.equal(model(x), full)  # eval mode: full rank
        model.train()
        assert not torch.allclose(model(x), full, atol=1e-6)
        layer = model.get_submodule(name)
        reference = LowRankLinear(layer.in_features, layer.out_features, rank=width)
        reference.A.copy_(layer.A[:width])
        reference.B.copy_(layer.B[:, :width])
        inp = torch.randn(3, layer.in_features)
        assert torch.allclose(layer(inp), reference(inp), atol=1e-6)
        clear_ordered_dropout(model)
        assert torch.allclose(model(x), full, atol=1e-6)


def _od_run(tmp_path: Path, data: Path, name: str, seed: int) -> tuple[list[Any], list[Any]]:
    from pretrainlab.train.trainer import Trainer

    cfg = tiny_run_config(tmp_path, data, name=name, seed=seed, train={"steps": 8},
                          model={"linear": "low_rank", "linear_options": {"rank": 8, "ordered_dropout": True}})
    trainer = Trainer(cfg)
    seen: list[tuple[int, bool, str, int | None]] = []
    for n, m in trainer.module.named_modules():
        if isinstance(m, LowRankLinear):
            m.register_forward_pre_hook(
                lambda mod, _args, n=n: seen.append((trainer.step, mod.training, n, mod.active_rank)))
    trainer.fit()
    return seen, [x["od_rank"] for x in train_lines(Path(tmp_path) / name)]


def test_ordered_dropout_in_a_run_one_layer_per_step_and_deterministic(tmp_path: Path, tiny_prepared: Path) -> None:
    seen, widths = _od_run(tmp_path, tiny_prepared, "a", seed=0)
    assert len(widths) == 8 and all(1 <= w <= 8 for w in widths)
    for step in range(8):
        active = {(n, r) for s, training, n, r in seen if s == step and training and r is not None}
        assert len(active) == 1 and next(iter(active))[1] == widths[step]
    assert all(r is None for _, training, _, r in seen if not training)  # evaluation: full rank
    assert _od_run(tmp_path, tiny_prepared, "b", seed=0)[1] == widths
    assert _od_run(tmp_path, tiny_prepared, "c", seed=1)[1] != widths


def test_ordered_dropout_run_resumes_exactly(tmp_path: Path, tiny_prepared: Path) -> None:
    model = {"linear": "low_rank", "linear_options": {"rank": 8, "ordered_dropout": True}}
    full, resumed = killed_and_resumed(tmp_path, tiny_prepared, model, keys=("loss", "od_rank"))
    assert len(full) == 6 and resumed == full


def test_low_rank_run_trains(tmp_path: Path) -> None:
    cfg = tiny_run_config(tmp_path, markov_prepared(tmp_path / "data"), train={"steps": 30},
                          model={"linear": "low_rank", "linear_options": {"rank": 8, "init": "zero_b"}})
    losses = [x["loss"] for x in train_lines(train_run(cfg))]
    assert losses[-1] < losses[0] - 0.3
