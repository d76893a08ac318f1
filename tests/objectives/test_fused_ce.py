import pytest
import torch
import torch.nn.functional as F

from pretrainlab.objectives import fused_linear_cross_entropy


def inputs(n: int = 200, d: int = 32, v: int = 301, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).requires_grad_()
    w = (torch.randn(v, d, generator=g) * 0.5).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    m = torch.rand(n, generator=g) > 0.3
    return h, w, t, m


def reference(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    per = F.cross_entropy((h @ w.t()).float(), t, reduction="none")
    return per if m is None else per * m


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_rows", [7, 64, None])
def test_fused_equals_plain_cross_entropy_values_and_grads(masked: bool, chunk_rows: int | None) -> None:
    h, w, t, m = inputs()
    mask = m if masked else None
    loss, per_token = fused_linear_cross_entropy(h, w, t, mask, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(loss * 0.7, (h, w))
    ref_per = reference(h, w, t, mask)
    rh, rw = torch.autograd.grad(ref_per.sum() * 0.7, (h, w))
    torch.testing.assert_close(per_token, ref_per.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_per.sum(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gh, rh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-6)
    if masked:
        assert (per_token[~m] == 0).all()


def test_fused_under_bf16_autocast_is_close_to_the_plain_path_under_autocast() -> None:
    h, w, t, m = inputs(n=256, d=64, v=512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = fused_linear_cross_entropy(h, w, t, m, chunk_rows=50)
        ref = reference(h, w, t, m).sum()
    gh, gw = torch.autograd.grad(loss, (h, w))
    rh, rw = torch.autograd.grad(ref, (h, w))
    assert gh.dtype == torch.float32 and gw.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-3)
    for ours, theirs in ((gh, rh), (gw, rw)):  # bf16 products: compare against the gradient's scale
        assert (ours - theirs).abs().max() <= 2e-2 * theirs.abs().max()
        assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.999


def test_without_grad_gives_the_same_losses() -> None:
    h, w, t, m = inputs()
    with torch.no_grad():
        loss, per = fused_linear_cross_entropy(h, w, t, m, chunk_rows=16)
    assert not loss.requires_grad
    torch.testing.assert_close(per, reference(h, w, t, m).detach(), rtol=1e-5, atol=1e-5)


def test_grad_flows_only_where_needed() -> None:
    h, w, t, _ = inputs()
    frozen = w.detach()
    loss, _ = fused_linear_cross_entropy(h, frozen, t)
    (gh,) = torch.autograd.grad(loss, (h,))
    (rh,) = torch.autograd.grad(reference(h, frozen, t, None).sum(), (h,))
    torch.testing.assert_close(gh, rh, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("autocast", [False, True])
def test_compiled_chunk_kernel_matches_eager(autocast: bool) -> None:
    h, w, t, m = inputs(n=96, d=16, v=128)
    results = []
    for compiled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, per = fused_linear_cross_entropy(h, w, t, m, chunk_rows=40, compiled=compiled)
        results.append((loss, per, *torch.autograd.grad(loss, (h, w))))
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-4, atol=1e-5)
    for eager, compiled_ in zip(*results):
        torch.testing.assert_close(compiled_, eager, **tol)
