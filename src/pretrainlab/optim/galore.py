"""GaLore and Fira: AdamW whose block matrices keep their Adam moments in a rank-r gradient subspace.

GaLore (Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
arXiv:2403.03507, Algorithm 1), for a projected matrix W (m, n) with gradient G_t, left side shown (the
right side is the transpose: Q (n, r), G~ = G Q, update (.) Q^T):

    every T steps (t mod T == 0):  P_t = U[:, :r]   from  G_t = U S V^T   (torch.linalg.svd, fp32)
    G~_t = P_t^T G_t                                                     (r, n)
    M_t = b1 M_{t-1} + (1 - b1) G~_t,   V_t = b2 V_{t-1} + (1 - b2) G~_t^2   (moments (r, n))
    psi_t = (M_t / (1 - b1^t)) / (sqrt(V_t / (1 - b2^t)) + eps)           (Adam's processed update)
    W <- W (1 - lr wd) - lr * alpha * P_t psi_t                           (decoupled decay as AdamW)

A refresh on a gradient without a subspace (all zero, e.g. the first gradient of A while B = 0 at init, or
non-finite) keeps the current projection and is retried at the next step (state `refresh`, a bool, is True
until then; a checkpoint without it, written before it existed, reads as False).

The moments are kept across subspace changes (as the official code does; they are not rotated), so
with a full-rank P the update is NOT AdamW's: Adam's element-wise division does not commute with the
rotation P. What does hold exactly: between two refreshes P is fixed, and GaLore's update equals
alpha * P (AdamW's update of a parameter whose gradient is P^T G); the tests check that.

Fira (Chen et al. 2024, "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?",
arXiv:2410.01623, §3 "norm-based scaling" and "norm-growth limiter"; equation numbers not re-verified
here) adds the part of the gradient outside the subspace, scaled like Adam scaled the part inside:

    R_t = G_t - P_t P_t^T G_t                                  (residual, orthogonal to span(P_t))
    phi_t = ||psi_t|| / ||G~_t||                                (norm-based scaling; per kept column
                                                               (left) or row (right) with
                                                               `scaling: column`, as the official
                                                               code; one number with `scaling: matrix`)
    S_t = residual_scale * phi_t * R_t
    if ||S_t|| / ||S_{t-1}|| > gamma:  S_t <- S_t * gamma ||S_{t-1}|| / ||S_t||   (limiter, gamma 1.01)
    W <- W (1 - lr wd) - lr * (alpha * P_t psi_t + S_t)

Differences from the official Fira code, on purpose: its residual is G - alpha P P^T G (the subspace
part minus only alpha of it); here R is the true residual G - P P^T G, as in the paper's text. The
Adam step uses torch.optim.AdamW's bias-correction placement, so plain parameters follow AdamW exactly.

Parameters outside the projection (vectors, embedding, head, small matrices) get plain AdamW. The
optimiser's state (moments, projection `proj`, `step`, Fira's `residual_norm`) lives in
`optimizer.state`, so a checkpoint resumes exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pretrainlab.config import OptimConfig
from pretrainlab.errors import ConfigError
from pretrainlab.optim.galore_options import Layout, LowRankOptions, is_projected, layout_of, parse_options
from pretrainlab.optim.registry import register_optimizer, register_options_check

_TINY = 1e-8  # guards the norm ratios, as the official Fira code


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW with GaLore projection on groups whose `lowrank` is true (and Fira's residual when `fira`).

    Group keys: lr, betas, eps, weight_decay (AdamW's) and, for projected groups, rank, update_proj_gap,
    scale, proj_type, fira, residual_scale, limiter_gamma, scaling.

    A step with lr == 0 on a parameter that has no state yet only allocates its state (zeros, step 0):
    torch.distributed.checkpoint initialises the state that way (a zero-gradient step at lr 0) before
    loading a checkpoint into it, and a projection computed from that zero gradient would be garbage.
    """

    def __init__(self, params: list[dict[str, Any]], *, lr: float, betas: tuple[float, float], eps: float,
                 **lowrank: Any) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0, "lowrank": False, **lowrank}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("galore/fira do not support sparse gradients")
                if group["lowrank"]:
                    self._lowrank_step(p, group)
                else:
                    self._adamw_step(p, group)
        return loss

    def state_shapes(self, p: Tensor, group: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """{state key: shape} of the tensors this optimiser keeps for `p` in `group` (checked against a loaded
        checkpoint by optim/state_check.py before it is loaded)."""
        if not group["lowrank"]:
            return {"step": (), "exp_avg": tuple(p.shape), "exp_avg_sq": tuple(p.shape)}
        layout = layout_of(tuple(p.shape), group["rank"], group["proj_type"])
        out = {"step": (), "proj": layout.proj_shape, "exp_avg": layout.moment_shape,
               "exp_avg_sq": layout.moment_shape}
        if group["fira"]:
            out["residual_norm"] = ()
        return out

    # ------------------------------------------------------------------ plain AdamW

    def _adamw_step(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["lr"] == 0:
                return
        update = self._adam(state, p.grad, group)
        self._apply(p, update, group)

    # ------------------------------------------------------------------ GaLore / Fira

    def _lowrank_step(self, p: Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        layout = layout_of(tuple(p.shape), group["rank"], group["proj_type"])
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["proj"] = torch.zeros(layout.proj_shape, dtype=p.dtype, device=p.device)
            state["exp_avg"] = torch.zeros(layout.moment_shape, dtype=p.dtype, device=p.device)
            state["exp_avg_sq"] = torch.zeros(layout.moment_shape, dtype=p.dtype, device=p.device)
            # a plain bool (on the host, never moved to the device by load_state_dict) and always present:
            # torch.distributed.checkpoint loads only the keys a freshly initialised state has
            state["refresh"] = False
            if group["fira"]:
                state["residual_norm"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            if group["lr"] == 0:
                return
        elif tuple(state["exp_avg"].shape) != layout.moment_shape or tuple(state["proj"].shape) != layout.proj_shape:
            raise ConfigError(
                f"galore/fira: the optimiser state of a {tuple(p.shape)} matrix has moments "
                f"{tuple(state['exp_avg'].shape)} and projection {tuple(state['proj'].shape)}, but rank "
                f"{group['rank']} and proj_type {group['proj_type']!r} make {layout.moment_shape} and "
                f"{layout.proj_shape}: the state was made with other optim.options",
                hint="keep the optim.options the state was made with, or start the optimiser afresh")
        if state.get("refresh", False) or int(state["step"].item()) % group["update_proj_gap"] == 0:
            basis = top_singular_vectors(grad, layout)
            # no subspace in this gradient: keep the current one and refresh at the next step
            state["refresh"] = basis is None
            if basis is not None:
                state["proj"].copy_(basis)
        proj = state["proj"]
        low = project(grad, proj, layout.side)
        psi = self._adam(state, low, group)
        update = back_project(psi, proj, layout.side).mul_(group["scale"])
        if group["fira"]:
            update.add_(self._fira_residual(state, grad, low, psi, proj, layout, group))
        self._apply(p, update, group)

    def _fira_residual(self, state: dict[str, Tensor], grad: Tensor, low: Tensor, psi: Tensor, proj: Tensor,
                       layout: Layout, group: dict[str, Any]) -> Tensor:
        """Fira's scaled, norm-growth-limited residual S_t (see the module docstring)."""
        residual = grad - back_project(low, proj, layout.side)
        if group["scaling"] == "matrix":
            phi: Tensor | float = psi.norm() / (low.norm() + _TINY)
        elif layout.side == "left":  # low (r, n): one factor per column of G
            phi = (psi.norm(dim=0) / (low.norm(dim=0) + _TINY)).unsqueeze(0)
        else:  # low (m, r): one factor per row of G
            phi = (psi.norm(dim=1) / (low.norm(dim=1) + _TINY)).unsqueeze(1)
        scaled = residual.mul_(phi).mul_(group["residual_scale"])
        norm = scaled.norm().float()
        gamma = group["limiter_gamma"]
        if gamma is not None and state["step"].item() > 1:
            limiter = torch.clamp(norm / (state["residual_norm"] + _TINY) / gamma, min=1.0)
            scaled.div_(limiter.to(scaled.dtype))
            norm = norm / limiter
        state["residual_norm"].copy_(norm)
        return scaled

    # ------------------------------------------------------------------ shared

    @staticmethod
    def _adam(state: dict[str, Tensor], grad: Tensor, group: dict[str, Any]) -> Tensor:
        """Advance `state`'s moments by `grad`; return Adam's bias-corrected update direction psi."""
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"].item()
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        return (exp_avg / denom).div_(1 - beta1**t)

    @staticmethod
    def _apply(p: Tensor, update: Tensor, group: dict[str, Any]) -> None:
        """Decoupled weight decay, then the step: p <- p (1 - lr wd) - lr update (torch.optim.AdamW's order)."""
        if group["weight_decay"] != 0:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"])


def top_singular_vectors(grad: Tensor, layout: Layout) -> Tensor | None:
    """The projection of `layout` from `grad`: left singular vectors U[:, :r] (m, r) or right ones V[:, :r] (n, r).

    Computed in fp32 (torch.linalg.svd, reduced). None when `grad` has no meaningful subspace: non-finite,
    or all zero (e.g. A's first gradient when B = 0 at init, low_rank `init: zero_b` and SLTrain, where any
    basis would be an arbitrary one kept for `update_proj_gap` steps). The optimiser then keeps its current
    projection for this step (zeros before the first refresh, so the step moves nothing the projection
    covers) and refreshes at the next step instead.
    """
    g = grad.float()
    if not bool(torch.isfinite(g).all()) or not bool(g.any()):
        return None
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    basis = u[:, : layout.rank] if layout.side == "left" else vh[: layout.rank].T
    return basis.to(grad.dtype)


def project(grad: Tensor, proj: Tensor, side: str) -> Tensor:
    """G~ = P^T G (left) or G Q (right)."""
    return proj.T @ grad if side == "left" else grad @ proj


def back_project(low: Tensor, proj: Tensor, side: str) -> Tensor:
    """P X (left) or X Q^T (right): a low-rank matrix back in the parameter's (m, n) space."""
    return proj @ low if side == "left" else low @ proj.T


def split_groups(groups: list[dict[str, Any]], opts: LowRankOptions) -> list[dict[str, Any]]:
    """Each weight-decay group split into its projected matrices (`lowrank: True`) and the rest.

    Groups keep their keys (weight_decay, base_lr, ...) and `param_names`; empty parts are dropped.
    Without `param_names` (a caller's own groups) every 2-D parameter counts as targeted.
    """
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        names: list[str | None] = list(group.get("param_names") or [None for _ in params])
        flags = [is_projected(n, tuple(p.shape), opts) for n, p in zip(names, params, strict=True)]
        for lowrank in (True, False):
            members = [i for i, f in enumerate(flags) if f == lowrank]
            if not members:
                continue
            part = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            part["params"] = [params[i] for i in members]
            if "param_names" in group:
                part["param_names"] = [names[i] for i in members]
            part["lowrank"] = lowrank
            out.append(part)
    return out


def _check_not_sharded(groups: list[dict[str, Any]], name: str) -> None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover (torch without distributed)
        return
    if any(isinstance(p, DTensor) for g in groups for p in g["params"]):
        raise ConfigError(
            f"optim.name={name} needs whole gradient matrices (an SVD per matrix), but the parameters are "
            "sharded (train.parallel=fsdp)",
            hint="train with DDP or one process, or use optim.name=adamw under FSDP",
        )


def build_lowrank(groups: list[dict[str, Any]], cfg: OptimConfig) -> GaLoreAdamW:
    """The GaLore (cfg.name == 'galore') or Fira ('fira') optimiser over `groups`."""
    opts = parse_options(cfg)
    _check_not_sharded(groups, cfg.name)
    return GaLoreAdamW(
        split_groups(groups, opts),
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        rank=opts.rank,
        update_proj_gap=opts.update_proj_gap,
        scale=opts.scale,
        proj_type=opts.proj_type,
        fira=cfg.name == "fira",
        residual_scale=opts.residual_scale,
        limiter_gamma=opts.limiter_gamma,
        scaling=opts.scaling,
    )


register_options_check("galore")(parse_options)
register_options_check("fira")(parse_options)


@register_optimizer("galore")
def build_galore(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """GaLore (Zhao et al. 2024): AdamW with rank-`rank` gradient projection of the block matrices."""
    return build_lowrank(groups, cfg)


@register_optimizer("fira")
def build_fira(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Fira (Chen et al. 2024): GaLore plus the norm-scaled, growth-limited residual of the gradient."""
    return build_lowrank(groups, cfg)
