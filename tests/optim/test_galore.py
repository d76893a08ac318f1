"""GaLore and Fira (optim/galore.py): projected state shapes, the exact properties of the projected
update, Fira's residual, options, training, exact resume, and the closed-form state size.

On "rank = min dim and T = 1 gives AdamW": it does not, even in theory. GaLore's moments live in the
rotated coordinates P^T G and Adam's element-wise division does not commute with a rotation (already at
step 1 AdamW moves by about sign(G), GaLore by P sign(P^T G)); with T = 1 the basis also changes every
step while the moments are not rotated. What holds exactly, and is tested: between two refreshes GaLore
is AdamW on the projected gradient, mapped back by alpha P, and every GaLore update lies in span(P).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.config import ModelConfig, OptimConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model.decoder import build_model
from pretrainlab.model.resolve import resolve_model_config
from pretrainlab.optim import OPTIMIZERS, build_optimizer, check_optimizer, register_optimizer
from pretrainlab.optim.galore import GaLoreAdamW
from pretrainlab.optim.state_memory import optimizer_state_breakdown, optimizer_state_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


class OneMatrix(nn.Module):
    """A single (m, n) matrix under `blocks.` (so it is targeted) and a vector that is not projected."""

    def __init__(self, m: int, n: int) -> None:
        super().__init__()
        self.blocks = nn.ParameterDict({"w": nn.Parameter(torch.randn(m, n))})
        self.gain = nn.Parameter(torch.ones(n))

    @property
    def w(self) -> nn.Parameter:
        return self.blocks["w"]


def tiny_decoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(resolve_model_config(ModelConfig(n_layers=2, d_model=32, n_heads=2), vocab_size=258,
                                            seq_len=32))


def lm_step(model: nn.Module, opt: torch.optim.Optimizer, tokens: torch.Tensor) -> float:
    logits = model.logits(model(tokens[:, :-1]))
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def named_state(opt: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    return {n: opt.state[p] for g in opt.param_groups for n, p in zip(g["param_names"], g["params"], strict=True)}


def galore_cfg(name: str = "galore", wd: float = 0.0, **options) -> OptimConfig:
    return OptimConfig(name=name, lr=0.01, weight_decay=wd, options=options)


# ---------------------------------------------------------------------------------------------- shapes


def test_state_has_the_projected_shapes() -> None:
    model = tiny_decoder()
    opt = build_optimizer(model, galore_cfg(rank=8))
    lm_step(model, opt, torch.randint(0, 258, (2, 17)))
    state = named_state(opt)
    # std projects the smaller side: qkv (96, 32) from the right, down (32, 128) from the left
    assert state["blocks.0.attn.qkv.weight"]["exp_avg"].shape == (96, 8)
    assert state["blocks.0.attn.qkv.weight"]["proj"].shape == (32, 8)
    assert state["blocks.0.mlp.down.weight"]["exp_avg_sq"].shape == (8, 128)
    assert state["blocks.0.mlp.down.weight"]["proj"].shape == (32, 8)
    for name, s in state.items():
        p = dict(model.named_parameters())[name]
        if name.startswith("blocks.") and p.ndim == 2:
            m, n = p.shape
            assert s["exp_avg"].shape == ((m, 8) if m >= n else (8, n))
            proj = s["proj"]
            assert torch.allclose(proj.T @ proj, torch.eye(8), atol=1e-5)  # orthonormal columns
        else:  # embedding (also the tied head) and norm gains: plain AdamW
            assert set(s) == {"step", "exp_avg", "exp_avg_sq"} and s["exp_avg"].shape == p.shape


@pytest.mark.parametrize("proj_type, moments, proj", [("left", (8, 32), (96, 8)), ("right", (96, 8), (32, 8)),
                                                      ("reverse_std", (8, 32), (96, 8))])
def test_proj_type_chooses_the_side(proj_type: str, moments: tuple, proj: tuple) -> None:
    model = tiny_decoder()
    opt = build_optimizer(model, galore_cfg(rank=8, proj_type=proj_type))
    lm_step(model, opt, torch.randint(0, 258, (2, 17)))
    s = named_state(opt)["blocks.0.attn.qkv.weight"]
    assert s["exp_avg"].shape == moments and s["proj"].shape == proj


def test_small_matrices_and_untargeted_ones_stay_adamw() -> None:
    model = tiny_decoder()
    opt = build_optimizer(model, galore_cfg())  # rank 128 > every min dim (32): nothing is projected
    assert not any(g["lowrank"] for g in opt.param_groups)
    opt = build_optimizer(model, galore_cfg(rank=8, min_dim=64))  # only min(m, n) >= 64: none here
    assert not any(g["lowrank"] for g in opt.param_groups)
    opt = build_optimizer(model, galore_cfg(rank=8, targets=["blocks.", "embed"]))
    projected = {n for g in opt.param_groups if g["lowrank"] for n in g["param_names"]}
    assert "embed.weight" in projected and len(projected) == 9


# ------------------------------------------------------------------------------ exact update properties


@pytest.mark.parametrize("m, n, rank", [(12, 20, 4), (20, 12, 12)])  # left / right side; partial / full rank
def test_between_refreshes_galore_is_adamw_on_the_projected_gradient(m: int, n: int, rank: int) -> None:
    torch.manual_seed(0)
    model = OneMatrix(m, n)
    scale = 0.5
    opt = build_optimizer(model, galore_cfg(rank=rank, min_dim=1, scale=scale, update_proj_gap=100))
    grads = [torch.randn(m, n) for _ in range(5)]
    left = m < n
    u, _, vh = torch.linalg.svd(grads[0], full_matrices=False)
    P = u[:, :rank] if left else vh[:rank].T
    x = nn.Parameter(torch.zeros((rank, n) if left else (m, rank)))
    ref = torch.optim.AdamW([x], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, foreach=False)
    for g in grads:
        before, x_before = model.w.detach().clone(), x.detach().clone()
        model.w.grad = g.clone()
        opt.step()
        x.grad = P.T @ g if left else g @ P
        ref.step()
        dx = x.detach() - x_before
        expected = scale * (P @ dx if left else dx @ P.T)
        assert torch.allclose(model.w.detach() - before, expected, atol=1e-6, rtol=1e-4)


def test_every_update_lies_in_the_current_subspace() -> None:
    torch.manual_seed(1)
    model = OneMatrix(16, 24)
    opt = build_optimizer(model, galore_cfg(rank=3, min_dim=1, update_proj_gap=1))
    bases = []
    for _ in range(4):
        before = model.w.detach().clone()
        model.w.grad = torch.randn(16, 24)
        opt.step()
        P = opt.state[model.w]["proj"]  # (16, 3): left side, refreshed every step (T = 1)
        delta = model.w.detach() - before
        assert torch.linalg.norm(delta - P @ (P.T @ delta)) < 1e-3 * torch.linalg.norm(delta)  # fp32 rounding of W
        bases.append(P.clone())
    assert not torch.allclose(bases[0].abs(), bases[1].abs(), atol=1e-3)  # T = 1: a new subspace each step


def test_unprojected_parameters_follow_torch_adamw() -> None:
    model, twin = tiny_decoder(), tiny_decoder()
    opt = build_optimizer(model, OptimConfig(name="galore", lr=0.01, weight_decay=0.1))  # rank 128: no projection
    ref = build_optimizer(twin, OptimConfig(name="adamw", lr=0.01, weight_decay=0.1, options={"fused": False}))
    tokens = torch.randint(0, 258, (2, 17))
    for _ in range(4):
        assert lm_step(model, opt, tokens) == pytest.approx(lm_step(twin, ref, tokens), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_weight_decay_is_decoupled_and_scaled_by_lr() -> None:
    model = OneMatrix(8, 12)
    opt = build_optimizer(model, OptimConfig(name="galore", lr=0.1, weight_decay=0.5, options={"rank": 2,
                                                                                              "min_dim": 1}))
    before = model.w.detach().clone()
    model.w.grad = torch.zeros(8, 12)  # zero gradient: only the decay moves the matrix
    model.gain.grad = torch.zeros(12)
    opt.step()
    assert torch.allclose(model.w.detach(), before * (1 - 0.1 * 0.5))
    assert torch.equal(model.gain.detach(), torch.ones(12))  # vectors are not decayed


# ----------------------------------------------------------------------------------------------- Fira


def run_steps(cfg: OptimConfig, grads: list[torch.Tensor], m: int = 16, n: int = 24) -> OneMatrix:
    torch.manual_seed(0)
    model = OneMatrix(m, n)
    opt = build_optimizer(model, cfg)
    for g in grads:
        model.w.grad = g.clone()
        opt.step()
    return model


def test_fira_with_zero_residual_weight_is_galore() -> None:
    torch.manual_seed(2)
    grads = [torch.randn(16, 24) for _ in range(6)]
    opts = {"rank": 4, "min_dim": 1, "update_proj_gap": 2}
    galore = run_steps(galore_cfg("galore", wd=0.1, **opts), grads)
    fira0 = run_steps(galore_cfg("fira", wd=0.1, residual_scale=0.0, **opts), grads)
    fira = run_steps(galore_cfg("fira", wd=0.1, **opts), grads)
    assert torch.equal(galore.w, fira0.w)
    assert not torch.allclose(galore.w, fira.w, atol=1e-4)


@pytest.mark.parametrize("m, n, scaling", [(16, 24, "column"), (24, 16, "column"), (16, 24, "matrix")])
def test_fira_first_step_is_the_scaled_residual_formula(m: int, n: int, scaling: str) -> None:
    """Step 1 by hand: psi = G~ / (|G~| + eps) (Adam's first step), phi = ||psi|| / ||G~|| per kept column
    (left) / row (right) or per matrix, update = alpha P psi + phi (G - P P^T G)."""
    torch.manual_seed(3)
    g = torch.randn(m, n)
    lr, alpha, eps = 0.01, 0.25, 1e-8
    model = run_steps(galore_cfg("fira", rank=4, min_dim=1, scaling=scaling), [g], m, n)
    torch.manual_seed(0)
    w0 = OneMatrix(m, n).w.detach()
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    left = m < n
    P = u[:, :4] if left else vh[:4].T
    low = P.T @ g if left else g @ P
    psi = low / (low.abs() + eps)
    back = (lambda x: P @ x) if left else (lambda x: x @ P.T)
    if scaling == "matrix":
        phi = psi.norm() / low.norm()
    elif left:
        phi = psi.norm(dim=0) / low.norm(dim=0)
    else:
        phi = (psi.norm(dim=1) / low.norm(dim=1)).unsqueeze(1)
    expected = w0 - lr * (alpha * back(psi) + phi * (g - back(low)))
    assert torch.allclose(model.w.detach(), expected, atol=1e-6)


def test_fira_norm_growth_limiter_caps_the_residual_growth() -> None:
    torch.manual_seed(4)
    low_rank = torch.randn(16, 4) @ torch.randn(4, 24)  # step 1: almost all of G lies in the rank-4 subspace
    noise = torch.randn(16, 24)
    grads = [low_rank + 0.01 * noise] + [low_rank + noise] * 3  # then a 100x larger residual
    cfg = galore_cfg("fira", rank=4, min_dim=1, update_proj_gap=100)
    torch.manual_seed(0)
    model = OneMatrix(16, 24)
    opt = build_optimizer(model, cfg)
    norms = []
    for g in grads:
        model.w.grad = g.clone()
        opt.step()
        norms.append(float(opt.state[model.w]["residual_norm"]))
    for prev, cur in zip(norms, norms[1:], strict=False):
        assert cur <= 1.01 * prev * (1 + 1e-5)
    assert norms[1] == pytest.approx(1.01 * norms[0], rel=1e-5)  # limited: growth exactly gamma
    free = run_steps(galore_cfg("fira", rank=4, min_dim=1, update_proj_gap=100, limiter_gamma=None), grads[:2])
    limited = run_steps(cfg, grads[:2])
    assert not torch.allclose(free.w, limited.w, atol=1e-4)


# -------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("galore", {"rnak": 8}, "optim.options.rnak"),
        ("galore", {"rank": 0}, "optim.options.rank"),
        ("galore", {"rank": 8.5}, "optim.options.rank"),
        ("galore", {"update_proj_gap": True}, "optim.options.update_proj_gap"),
        ("galore", {"scale": 0}, "optim.options.scale"),
        ("galore", {"proj_type": "full"}, "optim.options.proj_type"),
        ("galore", {"targets": []}, "optim.options.targets"),
        ("galore", {"residual_scale": 0.0}, r"optim.options.residual_scale .*a fira option"),
        ("fira", {"limiter_gamma": 0.5}, "optim.options.limiter_gamma"),
        ("fira", {"scaling": "row"}, "optim.options.scaling"),
        ("fira", {"fused": True}, "optim.options.fused"),
    ],
)
def test_bad_options_name_their_field(name: str, options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace(r"\.*", ".*")):
        build_optimizer(OneMatrix(4, 4), OptimConfig(name=name, options=options))


def test_options_are_checked_before_any_model_is_built() -> None:
    with pytest.raises(ConfigError, match=r"optim\.options\.update_proj_gap"):
        check_optimizer(OptimConfig(name="fira", options={"update_proj_gap": 0}))


def test_names_are_registered() -> None:
    build_optimizer(OneMatrix(4, 4), OptimConfig(name="fira"))
    assert {"adamw", "galore", "fira"} <= set(OPTIMIZERS.names())


# ------------------------------------------------------------------------------------ state and resume


@pytest.mark.parametrize("name", ["galore", "fira"])
def test_state_dict_round_trip_gives_identical_next_steps(name: str) -> None:
    cfg = galore_cfg(name, wd=0.1, rank=4, update_proj_gap=2)
    tokens = [torch.randint(0, 258, (2, 17), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    model = tiny_decoder()
    opt = build_optimizer(model, cfg)
    for t in tokens[:3]:
        lm_step(model, opt, t)
    twin = tiny_decoder(seed=9)
    twin.load_state_dict(model.state_dict())
    twin_opt = build_optimizer(twin, cfg)
    buffer = io.BytesIO()  # a real round trip: state_dict() shares the live tensors
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin_opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert isinstance(twin_opt, GaLoreAdamW)
    for t in tokens[3:]:  # step 3 reuses the restored projection (3 % 2 != 0), step 4 refreshes it
        assert lm_step(model, opt, t) == lm_step(twin, twin_opt, t)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_state_of_other_options_is_refused_at_the_next_step() -> None:
    """A state made at rank 2 with the group's rank changed to 4 afterwards (what loading a state dict under
    other options leaves): a clear error naming both shapes, not a shape error deep in a matmul."""
    model = OneMatrix(16, 8)
    opt = build_optimizer(model, galore_cfg(rank=2, min_dim=1, update_proj_gap=2))
    for _ in range(3):
        model.w.grad = torch.randn(16, 8)
        opt.step()
    opt.param_groups[0]["rank"] = 4
    model.w.grad = torch.randn(16, 8)
    with pytest.raises(ConfigError, match=r"a \(16, 8\) matrix has moments \(16, 2\) and projection \(8, 2\), but "
                       r"rank 4 and proj_type 'std' make \(16, 4\) and \(8, 4\)"):
        opt.step()


def test_a_first_step_at_lr_zero_only_allocates_the_state() -> None:
    """torch.distributed.checkpoint initialises an empty optimiser by a zero-gradient step at lr 0 before
    loading into it: that must not fix a projection from the zero gradient nor count a step."""
    model = OneMatrix(8, 12)
    opt = build_optimizer(model, galore_cfg("fira", rank=2, min_dim=1))
    opt.param_groups[0]["lr"] = 0.0
    model.w.grad = torch.zeros(8, 12)
    opt.step()
    state = opt.state[model.w]
    assert state["step"].item() == 0 and not state["proj"].any() and state["exp_avg"].shape == (2, 12)
    opt.param_groups[0]["lr"] = 0.01
    model.w.grad = torch.randn(8, 12)
    opt.step()
    assert state["step"].item() == 1 and torch.allclose(state["proj"].T @ state["proj"], torch.eye(2), atol=1e-5)


def test_a_zero_gradient_at_a_refresh_defers_it_to_the_next_step() -> None:
    """B = 0 at init (low_rank zero_b, SLTrain) makes A's first gradient exactly 0: no subspace to take.
    The refresh is retried at the next step instead of fixing an arbitrary basis for update_proj_gap steps."""
    model = OneMatrix(8, 12)
    opt = build_optimizer(model, galore_cfg("fira", rank=2, min_dim=1, update_proj_gap=5))
    before = model.w.detach().clone()
    model.w.grad = torch.zeros(8, 12)
    opt.step()
    state = opt.state[model.w]
    assert state["step"].item() == 1 and state["refresh"] is True and not state["proj"].any()
    assert torch.equal(model.w, before)  # nothing to move along (and no weight decay here)
    g = torch.randn(8, 12)
    model.w.grad = g
    opt.step()  # step 1: 1 % 5 != 0, refreshed anyway
    u = torch.linalg.svd(g, full_matrices=False)[0][:, :2]  # (8, 12): the left side is the smaller one
    assert state["refresh"] is False and torch.allclose(state["proj"].abs(), u.abs(), atol=1e-5)
    model.w.grad = torch.full((8, 12), float("nan"))
    kept = state["proj"].clone()
    for _ in range(4):  # steps 2..4 use the basis; 5 % 5 == 0 refreshes, but on a non-finite gradient
        opt.step()
    assert state["refresh"] is True and torch.equal(state["proj"], kept)


@pytest.fixture(scope="module")
def markov_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    return make_prepared(tmp_path_factory.mktemp("galore") / "data", train={"text": markov_docs(rng, 60)})


def run_cfg(tmp_path: Path, data: Path, name: str, run: str, steps: int, **options):
    return tiny_run_config(
        tmp_path, data, name=run, seed=5,
        optim={"name": name, "lr": 0.01, "options": {"rank": 8, **options}},
        schedule={"name": "constant", "warmup_steps": 0},
        train={"steps": steps, "deterministic": True},
        eval={"max_tokens_per_domain": 64, "batch_size": 8},
    )


def train_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "lr" in r and "loss" in r]


@pytest.mark.parametrize("name", ["galore", "fira"])
def test_thirty_steps_lower_the_loss(tmp_path: Path, markov_data: Path, name: str) -> None:
    losses = train_losses(train_run(run_cfg(tmp_path, markov_data, name, "fit", 30)))
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


@pytest.mark.parametrize("name", ["galore", "fira"])
def test_checkpoint_resume_is_exact(tmp_path: Path, markov_data: Path, name: str) -> None:
    from pretrainlab.train.trainer import Trainer

    straight = train_losses(train_run(run_cfg(tmp_path, markov_data, name, "straight", 6, update_proj_gap=2)))
    train_run(run_cfg(tmp_path, markov_data, name, "resumed", 3, update_proj_gap=2))
    trainer = Trainer(run_cfg(tmp_path, markov_data, name, "resumed", 6, update_proj_gap=2), resume=True)
    assert trainer.step == 3 and isinstance(trainer.optimizer, GaLoreAdamW)
    trainer.fit()
    assert train_losses(Path(trainer.run_dir)) == straight  # bitwise, step 4 on the restored projection


def test_sltrain_run_refreshes_a_at_step_two_and_resumes_exactly(tmp_path: Path, markov_data: Path) -> None:
    """SLTrain (sparse_low_rank: B = 0 at init): every A's first gradient is 0, so A's projection is taken at
    the second step (B's at the first); a checkpoint in between (refresh pending in the state) resumes
    bitwise."""
    from pretrainlab.train.trainer import Trainer

    def cfg(run: str, steps: int):
        c = run_cfg(tmp_path, markov_data, "galore", run, steps, rank=4, min_dim=4, update_proj_gap=10)
        return c.model_copy(update={"model": c.model.model_copy(update={
            "linear": "sparse_low_rank", "linear_options": {"rank": 8, "density": 0.1}})})

    def pending(trainer: Trainer) -> set[str]:
        return {n for n, p in trainer.module.named_parameters() if trainer.optimizer.state[p].get("refresh")}

    one = Trainer(cfg("one", 1))
    one.fit()
    a_names = {n for n, _ in one.module.named_parameters() if n.endswith(".A")}
    assert len(a_names) == 8 and pending(one) == a_names
    a_proj = {n: one.optimizer.state[p]["proj"] for n, p in one.module.named_parameters() if n in a_names}
    assert not any(t.any() for t in a_proj.values())
    straight = train_losses(train_run(cfg("straight", 4)))
    resumed = Trainer(cfg("one", 4), resume=True)
    assert pending(resumed) == a_names
    resumed.fit()
    assert pending(resumed) == set()
    for n, p in resumed.module.named_parameters():
        if n in a_names:
            proj = resumed.optimizer.state[p]["proj"]
            assert torch.allclose(proj.T @ proj, torch.eye(4), atol=1e-5), n
    assert train_losses(Path(resumed.run_dir)) == straight


def test_resume_with_options_of_other_shapes_is_refused(tmp_path: Path, markov_data: Path, capsys) -> None:
    from pretrainlab.train.trainer import Trainer

    train_run(run_cfg(tmp_path, markov_data, "galore", "run", 2, rank=4, update_proj_gap=2))
    with pytest.raises(ConfigError, match=r"--resume from .*step-2: the optimiser state 'blocks\.0\.attn\.qkv"
                       r"\.weight' 'proj' has shape \(32, 4\), but this run's GaLoreAdamW makes it \(32, 8\)") as e:
        Trainer(run_cfg(tmp_path, markov_data, "galore", "run", 4, rank=8, update_proj_gap=2), resume=True)
    assert "the optim.name and optim.options the run was started with" in str(e.value)
    capsys.readouterr()
    # options that keep the shapes: the checkpoint's values stay in force, and a warning says so
    trainer = Trainer(run_cfg(tmp_path, markov_data, "galore", "run", 4, rank=4, update_proj_gap=3), resume=True)
    out = capsys.readouterr().out
    assert "warning: --resume keeps the checkpoint's optimiser hyperparameters, not the config's: " \
           "update_proj_gap: checkpoint 2, config 3" in out
    assert {g["update_proj_gap"] for g in trainer.optimizer.param_groups if g["lowrank"]} == {2}


@pytest.mark.parametrize("name", ["adamw", "galore"])
def test_an_unchanged_resume_warns_nothing(tmp_path: Path, markov_data: Path, name: str, capsys) -> None:
    from pretrainlab.train.trainer import Trainer

    def cfg_of(steps: int):
        cfg = run_cfg(tmp_path, markov_data, name, "run", steps, rank=4)
        if name == "adamw":
            return cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"options": {}})})
        return cfg

    train_run(cfg_of(2))
    capsys.readouterr()
    cfg = cfg_of(3)
    Trainer(cfg, resume=True).fit()
    out = capsys.readouterr().out
    assert "resumed from" in out and "warning" not in out


# ------------------------------------------------------------------------------------------ state size


def real_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))  # GaLore's `refresh` flag is a plain bool


@pytest.mark.parametrize("name, options", [("adamw", {}), ("galore", {"rank": 8}), ("fira", {"rank": 8}),
                                           ("galore", {"rank": 4, "proj_type": "reverse_std"})])
def test_closed_form_state_bytes_equal_the_real_state(name: str, options: dict) -> None:
    model = tiny_decoder()
    cfg = OptimConfig(name=name, options=options)
    opt = build_optimizer(model, cfg)
    lm_step(model, opt, torch.randint(0, 258, (2, 17)))
    assert real_state_bytes(opt) == optimizer_state_bytes(model, cfg)


def test_state_bytes_of_the_1b_preset_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = build_model(resolve_model_config(ModelConfig(preset="1b"), vocab_size=32000, seq_len=2048))
    adamw = optimizer_state_bytes(model, OptimConfig())
    galore = optimizer_state_breakdown(model, OptimConfig(name="galore", options={"rank": 512}))
    fira = optimizer_state_bytes(model, OptimConfig(name="fira", options={"rank": 512}))
    n_params = sum(p.numel() for p in model.parameters())
    tensors = len(list(model.parameters()))
    assert adamw == 8 * n_params + 4 * tensors
    # per block: qkv (2560, 2048), out (2048, 2048), gate_up (11264, 2048) from the right; down (2048, 5632)
    # from the left: r (2 max + min) elements each instead of 2 m n
    r, shapes = 512, [(2560, 2048), (2048, 2048), (11264, 2048), (2048, 5632)]
    saved = 22 * sum(2 * m * n - r * (2 * max(m, n) + min(m, n)) for m, n in shapes)
    assert galore.total == adamw - 4 * saved
    assert galore.projections == 4 * 22 * r * sum(min(s) for s in shapes)
    assert fira == galore.total + 4 * 22 * 4  # one fp32 limiter norm per projected matrix
    assert galore.total / adamw == pytest.approx(0.342, abs=0.001)


def test_unknown_optimizer_is_an_error_and_one_without_a_formula_is_estimated() -> None:
    model = OneMatrix(4, 6)
    with pytest.raises(ConfigError, match="optim.name"):
        optimizer_state_bytes(model, OptimConfig(name="galor"))
    if "sgd_state_test" not in OPTIMIZERS:
        register_optimizer("sgd_state_test")(lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr))
    with pytest.warns(UserWarning, match="no state-size formula"):
        est = optimizer_state_breakdown(model, OptimConfig(name="sgd_state_test"))
    assert est.total == 2 * 4 * (24 + 6) + 2 * 4 and est.note
