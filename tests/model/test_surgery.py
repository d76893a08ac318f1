"""Model surgery (model/surgery.py): PELA's SVD conversion keeps the forward at full rank (1e-5, fp32) and its
error at rank r is the Eckart-Young tail per layer; other conversions go through effective weights; configs are
converted and checked before anything is built."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.config import ModelConfig, RunConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model
from pretrainlab.model.low_rank import LowRankLinear
from pretrainlab.model.surgery import (
    convert_model_config,
    dense_to_low_rank,
    effective_weight,
    load_converted,
    pela_rank,
    projections,
    svd_factors,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"n_layers": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "mlp_hidden": 48, "vocab_size": 50,
        "max_seq_len": 16, "init_std": 0.1}


def _model(seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**BASE, **changes})).eval()


def _logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model(tokens))


TOKENS = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bias", [False, True])
def test_full_rank_svd_preserves_the_forward(bias):
    dense = _model(0, bias=bias)
    if bias:  # non-zero biases, so copying them is tested
        with torch.no_grad():
            for m in projections(dense).values():
                m.bias.normal_(0, 0.1)
    low = _model(1, bias=bias, linear="low_rank", linear_options={"rank_fraction": 1.0, "alpha": 8})
    report = dense_to_low_rank(dense, low)
    assert set(report.converted) == set(projections(dense)) and len(report.converted) == 8
    diff = (_logits(dense, TOKENS) - _logits(low, TOKENS)).abs().max().item()
    print(f"full-rank SVD: max |logit difference| {diff:.2e}; relative error {report.relative_error():.2e}")
    assert diff < 1e-5
    assert all(isinstance(m, LowRankLinear) for m in projections(low).values())


def test_rank_r_error_is_the_eckart_young_tail_per_layer():
    dense = _model(0)
    rank, alpha = 8, 2.0  # scale alpha / r = 0.25: the factors absorb it
    low = _model(1, linear="low_rank", linear_options={"rank": rank, "alpha": alpha})
    report = dense_to_low_rank(dense.state_dict(), low)
    for prefix, src in projections(dense).items():
        W = src.weight.detach().double()
        s = torch.linalg.svdvals(W)
        tail = float(s[rank:].pow(2).sum())
        got = float((W - effective_weight(projections(low)[prefix]).detach().double()).pow(2).sum())
        assert report.converted[prefix].tail == pytest.approx(tail, rel=1e-9)
        assert got == pytest.approx(tail, rel=1e-4), prefix  # fp32 factors
        m = projections(low)[prefix]
        assert m.A.shape == (rank, W.shape[1]) and m.B.shape == (W.shape[0], rank)
        # split evenly: ||B||_F = ||A||_F (= sqrt(sum s_r / scale))
        assert float(m.B.detach().norm()) == pytest.approx(float(m.A.detach().norm()), rel=1e-5)
    print(f"rank {rank}: relative Frobenius error {report.relative_error():.3f}")


def test_svd_factors_scale_and_rank_checks():
    W = torch.randn(6, 4, dtype=torch.float64)
    f = svd_factors(W, 4, scale=3.0)
    assert torch.allclose(3.0 * f.B @ f.A, W, atol=1e-12) and f.tail == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="rank 5 is outside 1..4"):
        svd_factors(W, 5)


def test_sparse_low_rank_target_takes_the_residual_on_its_support():
    dense = _model(0)
    slr = _model(1, linear="sparse_low_rank", linear_options={"rank": 4, "density": 0.2})
    report = dense_to_low_rank(dense, slr)
    for prefix, src in projections(dense).items():
        got = float((src.weight.detach().double() - effective_weight(projections(slr)[prefix]).detach().double())
                    .pow(2).sum())
        assert got == pytest.approx(report.converted[prefix].tail, rel=1e-4)
        svd_tail = float(torch.linalg.svdvals(src.weight.detach().double())[4:].pow(2).sum())
        assert report.converted[prefix].tail < svd_tail  # the support's values take part of the residual


@pytest.mark.parametrize(("linear", "options"), [("low_rank", {"rank": 8, "alpha": 4}),
                                                 ("sparse_low_rank", {"rank": 4, "density": 0.1}),
                                                 ("masked", {"sparsity": 0.75})])
def test_any_source_converts_to_dense_by_its_effective_weight(linear, options):
    source = _model(0, linear=linear, linear_options=options)
    if linear != "masked":  # B starts at 0 in SLTrain: give the factors something to carry
        with torch.no_grad():
            for m in projections(source).values():
                m.B.normal_(0, 0.2)
    dense = _model(1)
    report = load_converted(source.state_dict().items(), dense, source_linear=linear, source_options=options)
    assert all(c.tail == 0.0 for c in report.converted.values())
    assert (_logits(source, TOKENS) - _logits(dense, TOKENS)).abs().max().item() < 1e-5
    if linear == "masked":  # SPDF: the masked entries arrive as exact zeros
        for prefix, m in projections(source).items():
            assert torch.equal(projections(dense)[prefix].weight[~m.mask], torch.zeros(int((~m.mask).sum())))


def test_conversion_into_masked_is_refused():
    with pytest.raises(ConfigError, match=r"model\.linear='masked'"):
        load_converted(_model(0).state_dict().items(), _model(1, linear="masked"))


def test_dense_to_low_rank_needs_a_low_rank_target():
    with pytest.raises(ConfigError, match="no low-rank projections"):
        dense_to_low_rank(_model(0), _model(1))


def test_convert_model_config_checks_ranks_against_the_preset_width():
    """A preset fixes d_model (1b: 2048): rank 512 is valid there (it used to be checked against 64 x 64)."""
    run = RunConfig.model_validate({"model": {"preset": "1b"}})
    out = convert_model_config(run, "low_rank", {"rank": 512})
    assert out.model.linear_options == {"rank": 512} and out.model.preset == "1b"
    assert convert_model_config(ModelConfig(preset="1b"), "sparse_low_rank", {"rank": 2048}).linear_options["rank"] == 2048
    with pytest.raises(ConfigError, match=r"model\.linear_options\.rank: 2049 is outside 1\.\.2048"):
        convert_model_config(run, "low_rank", {"rank": 2049})
    # no width yet (e.g. filled later by init_from): only what needs no shape is checked
    assert convert_model_config(ModelConfig(), "low_rank", {"rank": 512}).linear_options == {"rank": 512}
    for options, field in (({"rank": 0}, "rank"), ({}, "rank"), ({"rank": 4, "init": "x"}, "init")):
        with pytest.raises(ConfigError, match=rf"model\.linear_options\.{field}"):
            convert_model_config(ModelConfig(), "low_rank", options)
    with pytest.raises(ConfigError, match=r"linear 'dense' takes no options"):
        convert_model_config(ModelConfig(), "dense", {"rank": 4})


def test_convert_model_config():
    run = RunConfig.model_validate({"model": {"d_model": 64, "n_layers": 2}})
    out = convert_model_config(run, "low_rank", {"rank": 16})
    assert out.model.linear == "low_rank" and out.model.linear_options == {"rank": 16} and out.model.d_model == 64
    assert run.model.linear == "dense"  # a copy
    m = convert_model_config(ModelConfig(), "masked", {"sparsity": 0.75})
    assert isinstance(m, ModelConfig) and m.linear == "masked"
    with pytest.raises(ConfigError, match=r"model\.linear_options\.rank"):
        convert_model_config(run, "low_rank", {"rank": 65})
    with pytest.raises(ConfigError, match=r"model\.linear_options\.sparsity"):
        convert_model_config(run, "masked", {"sparsity": 1.5})
    with pytest.raises(ConfigError, match=r"model\.linear"):
        convert_model_config(run, "tucker")
    state = torch.random.get_rng_state()
    convert_model_config(run, "sparse_low_rank", {"rank": 4})
    assert torch.equal(torch.random.get_rng_state(), state)  # checking draws nothing


def test_pela_rank():
    assert pela_rank(768, 768, 2) == 192 and pela_rank(768, 3072, 3) == 204
    with pytest.raises(ValueError):
        pela_rank(8, 8, 0)


def test_init_from_and_load_converted_refuse_bad_tensors_alike():
    """The shared TensorCopier (model/tensor_copy.py): a tensor of another shape, one the model lacks, one
    the source lacks: the same CheckpointError from init_from's plain copy and from load_converted."""
    from pathlib import Path

    from pretrainlab.errors import CheckpointError
    from pretrainlab.model.tensor_copy import TensorCopier
    from pretrainlab.train.init_from import InitSource

    source = dict(_model(0).state_dict())
    copier = TensorCopier(_model(1).state_dict(), "the source")
    assert copier.copy("norm.weight", source["norm.weight"]) and not copier.copy("nope", torch.ones(1))
    assert copier.extra == ["nope"] and copier.seen == {"norm.weight"}
    cases = {
        "shape": ({**source, "norm.weight": torch.ones(7)}, r"the source: tensor 'norm\.weight' has shape \(7,\), "
                  r"the run's model \(32,\)"),
        "extra": ({**source, "blocks.0.extra": torch.ones(2)}, r"the source holds tensors the run's model lacks: "
                  r"blocks\.0\.extra"),
        "missing": ({k: v for k, v in source.items() if k != "norm.weight"},
                    r"the source has no tensor 'norm\.weight'\n"),
    }
    for name, (tensors, message) in cases.items():
        plain = InitSource(path=Path("src"), kind="run", model=ModelConfig(**BASE))
        plain.describe = lambda: "the source"  # type: ignore[method-assign]
        plain.tensors = lambda t=tensors: iter(t.items())  # type: ignore[method-assign]
        with pytest.raises(CheckpointError, match=message):
            plain._copy_into(_model(1))
        with pytest.raises(CheckpointError, match=message):
            load_converted(tensors.items(), _model(1), describe="the source")
        low = _model(1, linear="low_rank", linear_options={"rank": 4})  # projections converted, the rest copied
        with pytest.raises(CheckpointError, match=message):
            load_converted(tensors.items(), low, describe="the source")
    # and a complete source loads through both
    target = _model(1)
    ok = InitSource(path=Path("src"), kind="run", model=ModelConfig(**BASE))
    ok.tensors = lambda: iter(source.items())  # type: ignore[method-assign]
    ok._copy_into(target)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.items())
