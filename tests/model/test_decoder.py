import math

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.config import ModelConfig
from pretrainlab.model import build_model, count_parameters, resolve_model_config
from pretrainlab.model.decoder import Decoder
from pretrainlab.model.rope import apply_rope


def make(vocab: int = 97, seq_len: int = 16, **kw: object) -> Decoder:
    torch.manual_seed(0)
    kw.setdefault("preset", "tiny")
    return build_model(resolve_model_config(ModelConfig(**kw), vocab_size=vocab, seq_len=seq_len))


def test_shapes() -> None:
    m = make()
    tokens = torch.randint(0, 97, (3, 16))
    h = m(tokens)
    assert h.shape == (3, 16, 64)
    assert m.logits(h).shape == (3, 16, 97)
    assert m.output_weight.shape == (97, 64)


def test_causality() -> None:
    m = make(dropout=0.0).eval()
    tokens = torch.randint(0, 97, (2, 16))
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    a, b = m(tokens), m(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_tied_vs_untied_parameter_counts() -> None:
    tied, untied = make(tie_embeddings=True), make(tie_embeddings=False)
    ct, cu = count_parameters(tied, tied.cfg), count_parameters(untied, untied.cfg)
    assert cu["params"] - ct["params"] == 97 * 64
    assert ct["params_non_embedding"] == cu["params_non_embedding"] == ct["params"] - 97 * 64
    assert tied.output_weight is tied.embed.weight and untied.output_weight is untied.head.weight


def test_gpt2_124m_preset_on_meta_device() -> None:
    cfg = resolve_model_config(ModelConfig(preset="gpt2-124m"), vocab_size=50257, seq_len=1024)
    with torch.device("meta"):
        m = build_model(cfg)
    counts = count_parameters(m, cfg)
    assert 120e6 < counts["params"] < 128e6
    assert counts["params_non_embedding"] == 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 768


def test_gqa_matches_repeated_kv_heads() -> None:
    m = make(n_heads=4, n_kv_heads=2, d_model=64).eval()
    attn = m.blocks[0].attn
    assert attn.qkv.weight.shape == ((4 + 2 * 2) * 16, 64)
    x = torch.randn(2, 16, 64)
    qkv = x @ attn.qkv.weight.t()
    q = apply_rope(qkv[..., :64].view(2, 16, 4, 16), m.rope).transpose(1, 2)
    k = apply_rope(qkv[..., 64:96].view(2, 16, 2, 16), m.rope).transpose(1, 2)
    v = qkv[..., 96:].view(2, 16, 2, 16).transpose(1, 2)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 16, 64)
    torch.testing.assert_close(attn(x, m.rope[:16]), y @ attn.out.weight.t(), rtol=1e-4, atol=1e-5)


def test_qk_norm_adds_per_head_gains_and_changes_outputs() -> None:
    plain, normed = make(qk_norm=False), make(qk_norm=True)
    extra = count_parameters(normed, normed.cfg)["params"] - count_parameters(plain, plain.cfg)["params"]
    assert extra == 2 * 2 * 32  # q and k gains of head_dim 32, in 2 layers
    normed.blocks[0].attn.q_norm.weight.data.fill_(3.0)
    tokens = torch.randint(0, 97, (2, 16))
    assert torch.isfinite(normed(tokens)).all()
    assert not torch.allclose(normed(tokens), plain(tokens))


def test_rope_rotation_is_the_same_eager_and_compiled_form() -> None:
    from pretrainlab.model.rope import rope_table

    x, tab = torch.randn(2, 8, 3, 16), rope_table(16, 8, 10000.0)
    eager = apply_rope(x, tab)
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = tab[:, None, :, 0], tab[:, None, :, 1]
    torch.testing.assert_close(eager[..., 0::2], a * cos - b * sin)
    torch.testing.assert_close(eager[..., 1::2], a * sin + b * cos)
    torch.testing.assert_close(eager.norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_init_scales_residual_projections() -> None:
    m = make(preset="small", vocab=258)
    std = m.cfg.init_std
    assert abs(m.blocks[0].attn.qkv.weight.std().item() - std) < 0.1 * std
    out_std = std / math.sqrt(2 * 6)
    assert abs(m.blocks[0].attn.out.weight.std().item() - out_std) < 0.1 * out_std
    assert abs(m.blocks[0].mlp.down.weight.std().item() - out_std) < 0.1 * out_std


def test_meta_build_then_materialise_matches_direct_rope() -> None:
    cfg = make().cfg
    with torch.device("meta"):
        m = build_model(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    torch.testing.assert_close(m.rope, make().rope)
    assert torch.isfinite(m(torch.randint(0, 97, (1, 16)))).all()


@pytest.mark.parametrize("kw", [dict(norm="layernorm", mlp="gelu", bias=True), dict(dropout=0.1)])
def test_variants_train(kw: dict) -> None:
    m = make(**kw)
    h = m(torch.randint(0, 97, (2, 16)))
    h.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_dropout_only_in_training() -> None:
    m = make(dropout=0.5)
    tokens = torch.randint(0, 97, (2, 16))
    m.eval()
    torch.testing.assert_close(m(tokens), m(tokens))
    m.train()
    assert not torch.allclose(m(tokens), m(tokens))


def test_too_long_input_is_refused() -> None:
    with pytest.raises(ValueError, match="max_seq_len=16"):
        make()(torch.zeros(1, 17, dtype=torch.long))
