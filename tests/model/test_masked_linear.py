"""`masked` (MaskedLinear, SPDF): closed-form counts, exact zeros for ever, nn.Linear's key, resume."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from linear_common import killed_and_resumed, norm_params, projections, tiny_run_config  # noqa: E402

from pretrainlab.config import ModelConfig  # noqa: E402
from pretrainlab.errors import ConfigError  # noqa: E402
from pretrainlab.model import build_model, count_parameters, flops_per_token, matmul_params  # noqa: E402
from pretrainlab.model import resolve_model_config  # noqa: E402
from pretrainlab.model.masked_linear import MaskedLinear, MaskedLinearCallback  # noqa: E402
from pretrainlab.train.callbacks import linear_callbacks  # noqa: E402
from pretrainlab.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, T = 258, 32


def resolved(**options: Any) -> ModelConfig:
    return resolve_model_config(ModelConfig(n_layers=2, d_model=32, n_heads=2, linear="masked",
                                            linear_options=options), vocab_size=VOCAB, seq_len=T)


def masked_layers(model: nn.Module) -> list[MaskedLinear]:
    return [m for m in model.modules() if isinstance(m, MaskedLinear)]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75])
def test_parameter_counts_and_flops_are_closed_form(sparsity: float) -> None:
    cfg = resolved(sparsity=sparsity)
    shapes = projections(cfg)
    live = sum(i * o - round(sparsity * i * o) for i, o in shapes)
    model = build_model(cfg)
    assert count_parameters(model, cfg)["params_non_embedding"] == sum(i * o for i, o in shapes) + norm_params(cfg)
    assert sum(int(m.mask.sum()) for m in masked_layers(model)) == live
    assert matmul_params(model) == live + VOCAB * 32
    with torch.device("meta"):
        assert matmul_params(build_model(cfg)) == live + VOCAB * 32
    assert flops_per_token(cfg, T) == 6 * (live + VOCAB * 32) + 12 * 2 * 32 * T


def test_masked_weights_are_zero_and_get_no_gradient() -> None:
    torch.manual_seed(0)
    layer = MaskedLinear(40, 24, bias=True, sparsity=0.75)
    layer.init_weights(0.02)
    assert int((~layer.mask).sum()) == round(0.75 * 40 * 24)
    assert torch.count_nonzero(layer.weight[~layer.mask]) == 0 and torch.count_nonzero(layer.weight[layer.mask]) > 0
    x = torch.randn(3, 40)
    assert torch.allclose(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    (layer(x) * torch.tensor(float("inf"))).sum().backward()  # non-finite upstream: still exact zeros
    assert torch.count_nonzero(layer.weight.grad[~layer.mask]) == 0
    # set_mask zeroes what the new mask removes.
    new = layer.mask.clone()
    new[0] = False
    layer.set_mask(new)
    assert torch.count_nonzero(layer.weight[0]) == 0 and layer.matmul_params() == int(new.sum())
    with pytest.raises(ValueError):
        layer.set_mask(new.float())


def test_state_dict_key_is_nn_linears_weight() -> None:
    torch.manual_seed(0)
    layer = MaskedLinear(16, 8, sparsity=0.5)
    assert set(layer.state_dict()) == {"weight", "mask"}
    dense = nn.Linear(16, 8, bias=False)
    dense.load_state_dict({"weight": layer.weight.detach()})
    x = torch.randn(2, 16)
    assert torch.allclose(dense(x), layer(x))
    # A dense model's weight loads into the masked layer (strict=False: the mask stays).
    mask = layer.mask.clone()
    layer.load_state_dict(dense.state_dict(), strict=False)
    assert torch.equal(layer.mask, mask)


def test_the_callback_re_zeroes_after_any_optimiser_step() -> None:
    """An optimiser that moves masked weights (here: SGD with a bogus dense gradient) is corrected by the
    step post-hook the callback registers."""
    torch.manual_seed(0)
    model = nn.Sequential(MaskedLinear(16, 8, sparsity=0.5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleNamespace(module=model, optimizer=opt)
    cb = MaskedLinearCallback()
    cb.on_train_start(trainer)  # type: ignore[arg-type]
    layer = model[0]
    layer.weight.grad = torch.ones_like(layer.weight)
    opt.step()
    assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
    cb.on_train_end(trainer)  # type: ignore[arg-type]
    opt.step()
    assert torch.count_nonzero(layer.weight[~layer.mask]) > 0  # the hook is gone
    layer.post_step()
    assert torch.count_nonzero(layer.weight[~layer.mask]) == 0


@pytest.mark.parametrize(
    ("options", "key"),
    [({"sparsity": 1.0}, "sparsity"), ({"sparsity": -0.1}, "sparsity"), ({"sparsity": "half"}, "sparsity"),
     ({"density": 0.5}, "density")],
)
def test_bad_options_name_the_option(options: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"model\.linear_options\.{key}\b"):
        build_model(resolved(**options))
    cfg = tiny_run_config(tmp_path, tmp_path, model={"linear": "masked", "linear_options": options})
    with pytest.raises(ConfigError, match=rf"model\.linear_options\.{key}\b"):
        linear_callbacks(cfg)  # checked before the data and the model


def test_mask_fixed_and_masked_weights_exactly_zero_after_50_steps(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(tmp_path, tiny_prepared, train={"steps": 50},
                          model={"linear": "masked", "linear_options": {"sparsity": 0.75}},
                          optim={"weight_decay": 0.1})
    trainer = Trainer(cfg)
    assert "masked_linear" in [cb.name for cb in trainer.callbacks]
    layers = masked_layers(trainer.module)
    masks = [m.mask.clone() for m in layers]
    weights = [m.weight.detach().clone() for m in layers]
    trainer.fit()
    for m, mask, w in zip(layers, masks, weights, strict=True):
        assert torch.equal(m.mask, mask)
        assert torch.count_nonzero(m.weight[~mask]) == 0
        assert not torch.equal(m.weight[mask], w[mask])  # the live weights trained (and decayed)
        state = trainer.optimizer.state[m.weight]
        assert torch.count_nonzero(state["exp_avg"][~mask]) == 0


def test_resume_is_exact(tmp_path: Path, tiny_prepared: Path) -> None:
    model = {"linear": "masked", "linear_options": {"sparsity": 0.5}}
    full, resumed = killed_and_resumed(tmp_path, tiny_prepared, model)
    assert len(full) == 6 and resumed == full


def test_the_mask_is_restored_from_a_checkpoint_not_redrawn() -> None:
    cfg = resolved(sparsity=0.5)
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(1)
    b = build_model(cfg)
    assert not all(torch.equal(x.mask, y.mask) for x, y in zip(masked_layers(a), masked_layers(b), strict=True))
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x.mask, y.mask) for x, y in zip(masked_layers(a), masked_layers(b), strict=True))
