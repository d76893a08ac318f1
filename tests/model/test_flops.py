import torch

from pretrainlab.config import ModelConfig
from pretrainlab.model import build_model, flops_per_token, matmul_params, mfu, peak_flops, resolve_model_config


def test_flops_per_token_on_a_known_config() -> None:
    # 2 layers, d=64, 2 heads, SwiGLU hidden 192 (8/3*64 -> 192), tied head, vocab 100, T=32.
    cfg = resolve_model_config(ModelConfig(preset="tiny"), vocab_size=100, seq_len=32)
    assert cfg.mlp_hidden == 192
    per_layer = 64 * 3 * 64 + 64 * 64 + 64 * 2 * 192 + 192 * 64
    n = 2 * per_layer + 100 * 64
    assert flops_per_token(cfg, 32) == 6 * n + 12 * 2 * 64 * 32
    assert matmul_params(build_model(cfg)) == n


def test_gqa_and_untied_head_change_the_count() -> None:
    base = resolve_model_config(ModelConfig(preset="tiny", n_heads=4), vocab_size=100, seq_len=32)
    gqa = base.model_copy(update={"n_kv_heads": 1})
    untied = base.model_copy(update={"tie_embeddings": False})
    assert flops_per_token(base, 32) - flops_per_token(gqa, 32) == 6 * 2 * (2 * 3 * 16 * 64)
    assert flops_per_token(untied, 32) == flops_per_token(base, 32)  # the head matmul is counted either way


def test_mfu_arithmetic() -> None:
    assert mfu(1000.0, 2e6, 1e10) == 0.2


def test_cpu_peak_is_measured_once_and_plausible() -> None:
    a = peak_flops(torch.device("cpu"), torch.float32)
    assert a == peak_flops("cpu", torch.float32)  # cached
    assert 1e8 < a < 1e14


def test_gpu_datasheet_table() -> None:
    from pretrainlab.model.flops import _gpu_table_peak

    assert _gpu_table_peak("NVIDIA H200", torch.bfloat16) == 989.5e12
    assert _gpu_table_peak("NVIDIA H100 PCIe", torch.bfloat16) == 756.5e12
    assert _gpu_table_peak("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312e12
    assert _gpu_table_peak("Some Other GPU", torch.bfloat16) is None
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert _gpu_table_peak("NVIDIA H100 80GB HBM3", torch.float32) == 66.9e12
        torch.set_float32_matmul_precision("high")
        assert _gpu_table_peak("NVIDIA H100 80GB HBM3", torch.float32) == 494.7e12
    finally:
        torch.set_float32_matmul_precision(prev)


def test_the_peak_probe_leaves_the_global_rng_alone() -> None:
    import torch

    from pretrainlab.model.flops import _probe

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _probe.__wrapped__("cpu", None, torch.float32, torch.get_num_threads(), 0.01)
    assert torch.equal(torch.rand(3), expected)
