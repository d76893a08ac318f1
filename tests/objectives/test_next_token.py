import pytest
import torch

from pretrainlab.config import ModelConfig
from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.objectives import build_objective


def model(vocab: int = 97, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(resolve_model_config(ModelConfig(preset="tiny", **kw), vocab_size=vocab, seq_len=16))


def batch(mask: bool = False, vocab: int = 97) -> Batch:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab, (4, 17), generator=g)
    loss_mask = None
    if mask:
        loss_mask = torch.ones(4, 17, dtype=torch.bool)
        loss_mask[1, 10:] = False  # a padded row
        loss_mask[3, :] = False  # an empty row
    return Batch(tokens=tokens, loss_mask=loss_mask, domains=torch.tensor([0, 1, 0, 1]))


def test_unknown_objective_and_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'next_token'"):
        build_objective("next_tokens", {})
    with pytest.raises(ConfigError, match="objective_options.chunk"):
        build_objective("next_token", {"chunk": 3})
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        build_objective("next_token", {"chunk_rows": 0})


@pytest.mark.parametrize("masked", [False, True])
def test_fused_and_plain_objectives_agree_on_loss_and_parameter_grads(masked: bool) -> None:
    results = []
    for fused in (True, False):
        m = model(tie_embeddings=False)
        out = build_objective("next_token", {"fused": fused, "chunk_rows": 9})(m, batch(masked))
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in m.named_parameters()}))
    (fo, fg), (po, pg) = results
    assert fo.n_tokens == po.n_tokens == (4 * 16 if not masked else 16 + 9 + 16)
    torch.testing.assert_close(fo.loss, po.loss)
    torch.testing.assert_close(fo.loss_sum / fo.n_tokens, fo.loss)
    for name in fg:
        torch.testing.assert_close(fg[name], pg[name], rtol=1e-4, atol=1e-6, msg=name)


def test_masked_loss_is_the_mean_over_counted_targets_only() -> None:
    b = batch(mask=True)
    m = model()
    out = build_objective("next_token", {})(m, b)
    logits = m.logits(m(b.inputs)).float()
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b.targets, reduction="none")
    keep = b.target_mask
    torch.testing.assert_close(out.loss, per[keep].mean())


def test_per_domain_metrics_sum_to_the_total() -> None:
    b = batch(mask=True)
    out = build_objective("next_token", {"per_domain": True, "domains": ["code", "prose"]})(model(), b)
    assert out.metrics["tokens/code"] == 16 + 16 and out.metrics["tokens/prose"] == 9
    assert out.metrics["loss_sum/code"] + out.metrics["loss_sum/prose"] == pytest.approx(out.loss_sum.item(), rel=1e-5)
    assert build_objective("next_token", {})(model(), b).metrics == {}


@pytest.mark.parametrize("bf16", [False, True])
def test_tiny_model_overfits_a_fixed_batch(bf16: bool) -> None:
    torch.manual_seed(0)
    m = model(vocab=64)
    b = batch(vocab=64)
    objective = build_objective("next_token", {})
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = objective(m, b)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    assert losses[0] > 3.5  # ~ln 64 at init
    assert losses[-1] < 0.3 * losses[0]


def test_works_through_a_compile_wrapper_attribute_path() -> None:
    from pretrainlab.objectives import unwrap

    class Wrapper(torch.nn.Module):  # stands in for DDP: the model lives in `.module`
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.module = inner

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.module(tokens)

    m = model()
    assert unwrap(Wrapper(m)) is m
    a = build_objective("next_token", {})(Wrapper(m), batch()).loss
    torch.testing.assert_close(a, build_objective("next_token", {})(m, batch()).loss)


@pytest.mark.parametrize(("vocab", "expect_fused"), [(97, False), (1024, True)])
def test_fused_head_is_chosen_by_vocabulary_size(monkeypatch, vocab: int, expect_fused: bool) -> None:
    import pretrainlab.objectives.next_token as nt

    calls = []
    real = nt.fused_linear_cross_entropy
    monkeypatch.setattr(nt, "fused_linear_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    build_objective("next_token", {})(model(vocab), batch(vocab=vocab))
    assert bool(calls) is expect_fused
    calls.clear()
    build_objective("next_token", {"fused": True})(model(vocab), batch(vocab=vocab))
    assert calls, "an explicit fused=true is always honoured"
