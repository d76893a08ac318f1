"""`sparse_low_rank` (SLTrain): closed-form counts, the fixed support, init, meta sizing, training, resume."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from linear_common import killed_and_resumed, norm_params, projections, tiny_run_config  # noqa: E402

from pretrainlab.config import ModelConfig  # noqa: E402
from pretrainlab.errors import ConfigError  # noqa: E402
from pretrainlab.model import build_model, count_parameters, flops_per_token, matmul_params  # noqa: E402
from pretrainlab.model import resolve_model_config  # noqa: E402
from pretrainlab.model.sparse_low_rank import SparseLowRankLinear  # noqa: E402
from pretrainlab.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, T = 258, 32


def resolved(preset: str | None = None, **options: Any) -> ModelConfig:
    shape = {"preset": preset} if preset else {"n_layers": 2, "d_model": 32, "n_heads": 2}
    return resolve_model_config(ModelConfig(**shape, linear="sparse_low_rank", linear_options=options),
                                vocab_size=VOCAB, seq_len=T)


def support_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for m in model.modules():
        if isinstance(m, SparseLowRankLinear):
            h.update(m.support.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("options", [{"rank": 8}, {"rank_fraction": 0.25, "alpha": 2.0, "density": 0.1}])
def test_parameter_counts_and_flops_are_closed_form(options: dict[str, Any]) -> None:
    cfg = resolved(**options)
    r = options.get("rank") or round(options["rank_fraction"] * 32)
    density = options.get("density", 0.03)
    closed = sum(r * (i + o) + round(density * i * o) for i, o in projections(cfg))
    model = build_model(cfg)
    assert count_parameters(model, cfg)["params_non_embedding"] == closed + norm_params(cfg)
    assert matmul_params(model) == closed + VOCAB * 32
    with torch.device("meta"):
        meta = build_model(cfg)
    assert matmul_params(meta) == closed + VOCAB * 32
    assert count_parameters(meta, cfg) == count_parameters(model, cfg)
    assert flops_per_token(cfg, T) == 6 * (closed + VOCAB * 32) + 12 * 2 * 32 * T


def test_mini_preset_has_under_half_the_non_embedding_parameters_of_dense() -> None:
    """SLTrain at r = d/4, delta = 0.03 (papers-model.md section 1(c)); sized on the meta device. Our fused qkv
    and gate_up are one matrix each, so the ratio is lower than for separate q, k, v, gate, up (~42.5%)."""
    sl = resolved("mini", rank=32, density=0.03)
    dense = sl.model_copy(update={"linear": "dense", "linear_options": {}})
    with torch.device("meta"):
        ratio = (count_parameters(build_model(sl), sl)["params_non_embedding"]
                 / count_parameters(build_model(dense), dense)["params_non_embedding"])
    assert 0.30 < ratio <= 0.45


def test_support_forward_and_init() -> None:
    torch.manual_seed(0)
    layer = SparseLowRankLinear(40, 24, bias=True, rank=4, alpha=2.0, density=0.1)
    s = layer.support
    assert s.dtype == torch.int64 and len(s) == round(0.1 * 40 * 24) == layer.nnz
    assert torch.equal(s, s.sort().values) and len(s.unique()) == len(s) and 0 <= s.min() and s.max() < 40 * 24
    assert "support" in layer.state_dict() and set(dict(layer.named_parameters())) == {"A", "B", "values", "bias"}
    assert torch.count_nonzero(layer.B) == 0 and layer.A.abs().max() <= 1 / math.sqrt(40)
    assert layer.values.abs().max() <= 1 / math.sqrt(40) and torch.count_nonzero(layer.bias) == 0
    with torch.no_grad():
        torch.nn.init.normal_(layer.B)
        torch.nn.init.normal_(layer.bias)
    dense = 0.5 * layer.B @ layer.A
    dense.view(-1)[s] += layer.values
    x = torch.randn(3, 40)
    assert torch.allclose(layer(x), F.linear(x, dense, layer.bias), atol=1e-5)
    assert torch.allclose(layer.effective_weight(), dense, atol=1e-6)
    layer(x).sum().backward()
    assert layer.values.grad is not None and layer.A.grad is not None and layer.B.grad is not None
    # The support comes from the default generator: the same seed draws the same one.
    torch.manual_seed(0)
    assert torch.equal(SparseLowRankLinear(40, 24, rank=4, density=0.1).support, s)
    torch.manual_seed(1)
    assert not torch.equal(SparseLowRankLinear(40, 24, rank=4, density=0.1).support, s)


def test_meta_device_draws_nothing_until_moved_and_initialised() -> None:
    state = torch.get_rng_state()
    with torch.device("meta"):
        layer = SparseLowRankLinear(64, 48, rank=8, density=0.05)
    assert layer.support.is_meta and torch.equal(torch.get_rng_state(), state)  # no draw, no RNG consumed
    assert layer.matmul_params() == 8 * (64 + 48) + round(0.05 * 64 * 48)
    layer.to_empty(device="cpu")
    layer.init_weights(0.02)
    s = layer.support
    assert len(s.unique()) == len(s) and torch.equal(s, s.sort().values) and s.max() < 64 * 48


@pytest.mark.parametrize(
    ("options", "key"),
    [({"rank": 4, "density": 0.0}, "density"), ({"rank": 4, "density": 1.5}, "density"),
     ({"rank": 0}, "rank"), ({"rank": 64}, "rank"), ({"density": 0.1}, "rank"),
     ({"rank": 4, "sparsity": 0.5}, "sparsity")],
)
def test_bad_options_name_the_option(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"model\.linear_options\.{key}\b"):
        build_model(resolved(**options))


def test_support_never_changes_in_50_steps_and_only_factors_and_values_train(
    tmp_path: Path, tiny_prepared: Path
) -> None:
    cfg = tiny_run_config(tmp_path, tiny_prepared, train={"steps": 50},
                          model={"linear": "sparse_low_rank", "linear_options": {"rank": 8, "density": 0.05}},
                          optim={"weight_decay": 0.1})
    trainer = Trainer(cfg)
    before = support_hash(trainer.module)
    values = [m.values.detach().clone() for m in trainer.module.modules() if isinstance(m, SparseLowRankLinear)]
    trainer.fit()
    assert support_hash(trainer.module) == before
    after = [m.values for m in trainer.module.modules() if isinstance(m, SparseLowRankLinear)]
    assert all(not torch.equal(a, b) for a, b in zip(values, after, strict=True))
    stateful = {id(p) for p in trainer.optimizer.state}
    names = {n.rsplit(".", 1)[-1] for n, p in trainer.module.named_parameters() if id(p) in stateful}
    assert names <= {"A", "B", "values", "weight"}  # weight: the embedding and the norm gains
    blocks = {n.rsplit(".", 1)[-1] for n, p in trainer.module.blocks.named_parameters() if p.dim() >= 1 and
              "norm" not in n}
    assert blocks == {"A", "B", "values"}


def test_resume_is_exact(tmp_path: Path, tiny_prepared: Path) -> None:
    model = {"linear": "sparse_low_rank", "linear_options": {"rank": 8, "density": 0.05}}
    full, resumed = killed_and_resumed(tmp_path, tiny_prepared, model)
    assert len(full) == 6 and resumed == full


def test_the_support_is_restored_from_a_checkpoint_not_redrawn() -> None:
    cfg = resolved(rank=8)
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(1)
    b = build_model(cfg)
    assert support_hash(a) != support_hash(b)
    b.load_state_dict(a.state_dict())
    assert support_hash(a) == support_hash(b)
