import pytest

from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model import PRESETS, resolve_model_config


def resolve(**kw: object) -> ModelConfig:
    return resolve_model_config(ModelConfig(**kw), vocab_size=258, seq_len=64)


def test_preset_fills_sizes_and_data_fills_vocab_and_length() -> None:
    cfg = resolve(preset="gpt2-124m")
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads) == (12, 768, 12, 12)
    assert cfg.mlp_hidden == 2048 and cfg.vocab_size == 258 and cfg.max_seq_len == 64


def test_explicit_fields_override_the_preset_and_rederive_widths() -> None:
    cfg = resolve(preset="bench-b", d_model=256)
    assert cfg.d_model == 256 and cfg.n_layers == 4
    assert cfg.mlp_hidden == 704  # 8/3 * 256 rounded up to 64, not the preset's 352
    assert resolve(preset="bench-b").mlp_hidden == 352
    assert resolve(preset="1b", n_heads=16).n_kv_heads == 16


def test_free_sizes_without_preset_and_default_preset() -> None:
    cfg = resolve(n_layers=3, d_model=96, n_heads=3)
    assert cfg.preset is None and cfg.mlp_hidden == 256 and cfg.n_kv_heads == 3
    assert resolve().preset == "mini"


def test_resolve_is_idempotent() -> None:
    for name in PRESETS:
        cfg = resolve(preset=name)
        assert resolve_model_config(cfg, vocab_size=258, seq_len=64) == cfg


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(d_model=100, n_heads=3, n_layers=1), "model.d_model=100 is not divisible by model.n_heads=3"),
        (dict(preset="tiny", n_kv_heads=3, n_heads=4), "model.n_heads=4 is not divisible by model.n_kv_heads=3"),
        (dict(d_model=90, n_heads=2, n_layers=1), "45 is odd"),
        (dict(preset="tiny", vocab_size=100), "model.vocab_size=100"),
        (dict(preset="tiny", max_seq_len=32), "model.max_seq_len=32"),
        (dict(preset="tiny", norm="rmsnrom"), "model.norm='rmsnrom'"),
        (dict(preset="tiny", mlp="geglu"), "model.mlp='geglu'"),
    ],
)
def test_errors_name_the_field(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve(**kw)
    assert needle in str(e.value)


def test_unknown_preset_lists_valid_ones_and_suggests() -> None:
    with pytest.raises(ConfigError) as e:
        resolve(preset="gpt2-124")
    assert "model.preset='gpt2-124'" in str(e.value) and "did you mean 'gpt2-124m'" in str(e.value)
    assert "bench-a" in str(e.value)


def test_dense_linear_rejects_options() -> None:
    from pretrainlab.model import build_model

    with pytest.raises(ConfigError, match="model.linear_options"):
        build_model(resolve(preset="tiny", linear_options={"rank": 4}))
