"""Gradual magnitude pruning (`gradual_pruning`, *The Journey Matters*): schedule, masks, N-bar, exact resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import make_prepared, random_docs, tiny_run_config
from pretrainlab.config import CallbackConfig
from pretrainlab.errors import ConfigError
from pretrainlab.model.masked_linear import MaskedLinear
from pretrainlab.recipes.journey import (
    GradualPruning,
    default_every,
    expected_avg_params,
    prunable_weights,
    pruning_steps,
    target_live,
)
from pretrainlab.train.callbacks import Callback, StepInfo, build_callbacks
from pretrainlab.train.checkpoint import list_checkpoints, load_checkpoint
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SPARSITY = 0.6


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("journey")
    return make_prepared(root / "prepared", train={"a": random_docs(rng, 120)}, val={"a": random_docs(rng, 8)})


def pruned_config(out: Path, data: Path, *, steps: int, options: dict[str, Any] | None = None, **sections: Any) -> Any:
    train = {"steps": steps, "deterministic": True, **sections.pop("train", {})}
    callbacks = [{"name": "gradual_pruning", "options": {"sparsity": SPARSITY, **(options or {})}}]
    return tiny_run_config(out, data, train=train, callbacks=callbacks, **sections)


def pruner(trainer: Trainer) -> GradualPruning:
    return next(cb for cb in trainer.callbacks if isinstance(cb, GradualPruning))


def train_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "event" not in r and "lr" in r]


# ---------------------------------------------------------------------------------------------- schedule


def test_schedule_matches_the_paper_and_always_ends_at_t_e() -> None:
    assert pruning_steps(100, 0.25, 0.75, 5) == list(range(25, 76, 5))  # N = (t_e - t_s) / f + 1 = 11
    assert default_every(100) == 5 and default_every(7) == 1
    # every does not divide t_e - t_s: ceil(50 / 7) gaps of 6.25 steps, t_e still the last event
    assert pruning_steps(100, 0.25, 0.75, 7) == [25, 31, 38, 44, 50, 56, 63, 69, 75]
    assert pruning_steps(100, 0.5, 1.0, 10)[-1] == 99  # an event after the last step would change nothing
    assert pruning_steps(100, 0.0, 0.0, 10) == [0]  # one event before the first step: p = S
    # the same fraction of the survivors per event; exactly the target after the last
    n, final = 10_000, 4_000
    lives = [target_live(k, 11, n, final) for k in range(12)]
    assert lives[0] == n and lives[-1] == final and all(a > b for a, b in zip(lives, lives[1:]))
    p = 1 - (1 - SPARSITY) ** (1 / 11)
    assert all(abs(lives[k] - n * (1 - p) ** k) <= 0.5 for k in range(12))


def test_expected_avg_params_is_the_geometric_closed_form() -> None:
    """N-bar = (1/T) sum_t N_t for a schedule of N geometric events: a sum over the constant stretches."""
    non_embedding, prunable, steps, s = 50_000, 40_000, 200, 0.6
    events = pruning_steps(steps, 0.25, 0.75, default_every(steps))
    n = len(events)
    p = 1 - (1 - s) ** (1 / n)
    stretch = [events[0]] + [b - a for a, b in zip(events, events[1:])] + [steps - events[-1]]  # steps at k events
    closed = non_embedding - prunable + sum(prunable * (1 - p) ** k * d for k, d in enumerate(stretch)) / steps
    assert expected_avg_params(non_embedding, prunable, steps, s) == pytest.approx(closed, abs=0.5)
    dense_fraction = (events[0] + 1) / steps  # the stretch before the first event, steps 1 .. t_s + ... checks sum
    assert sum(stretch) == steps and 0 < dense_fraction < 1


def test_bad_options_are_config_errors_naming_the_field() -> None:
    for options, said in [({}, "sparsity"), ({"sparsity": 1.0}, "sparsity"), ({"sparsity": 0}, "sparsity"),
                          ({"sparsity": "half"}, "sparsity"), ({"sparsity": 0.5, "start": 0.8, "end": 0.2}, "start"),
                          ({"sparsity": 0.5, "end": 1.5}, "end"), ({"sparsity": 0.5, "every": 0}, "every"),
                          ({"sparsity": 0.5, "scope": "all"}, "scope"), ({"sparsity": 0.5, "period": 3}, "period")]:
        with pytest.raises(ConfigError) as e:
            build_callbacks([CallbackConfig(name="gradual_pruning", options=options)])
        assert "callbacks.0.options" in str(e.value) and said in str(e.value), options


def test_fsdp_is_refused_clearly(tmp_path: Path, data: Path) -> None:
    trainer = Trainer(pruned_config(tmp_path, data, steps=4, parallel="fsdp"))
    with pytest.raises(ConfigError, match="parallel=fsdp"):
        trainer.fit()


def test_a_model_without_prunable_weights_is_refused(tmp_path: Path, data: Path) -> None:
    cfg = pruned_config(tmp_path, data, steps=4, model={"n_layers": 2, "d_model": 32, "n_heads": 2,
                                                         "linear": "low_rank", "linear_options": {"rank": 4}})
    with pytest.raises(ConfigError, match="no prunable weights with model.linear='low_rank'"):
        Trainer(cfg).fit()


# ---------------------------------------------------------------------------------------------- mechanism


class Spy(Callback):
    """Listed before the pruner: sees each step's event done (on_before_optimizer_step, after the forward) and
    the weights right after the optimiser step, before the pruner re-zeroes them (on_step_end)."""

    name = "spy"

    def __init__(self, target: GradualPruning) -> None:
        self.p = target
        self.previous: list[torch.Tensor] | None = None
        self.events_seen: list[int] = []

    def on_before_optimizer_step(self, trainer: Trainer, info: StepInfo) -> bool:
        masks = [m.clone() for m in self.p.masks]
        for w, m in zip(self.p.weights, masks):
            assert torch.all(w[~m] == 0), f"step {info.step + 1}: a masked weight was not 0 in the forward"
            assert w.grad is not None and torch.all(w.grad[~m] == 0), "the gradient hook let a masked entry through"
        if self.previous is not None:
            assert all(torch.all(new <= old) for new, old in zip(masks, self.previous)), "a mask grew"
            if any(not torch.equal(new, old) for new, old in zip(masks, self.previous)):
                self.events_seen.append(info.step)
                for w, m in zip(self.p.weights, masks):  # the event zeroed the moments of what it pruned
                    for value in trainer.optimizer.state[w].values():
                        if value.shape == w.shape:
                            assert torch.all(value[~m] == 0)
        self.previous = masks
        return True

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        # before the pruner re-zeroes: zero gradient and zero moments already leave masked weights at 0
        for w, m in zip(self.p.weights, self.p.masks):
            assert torch.all(w[~m] == 0)


class AfterEveryStep(Callback):
    name = "after_every_step"

    def __init__(self, target: GradualPruning) -> None:
        self.p = target
        self.checked = 0

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        for w, m in zip(self.p.weights, self.p.masks):
            assert torch.all(w[~m] == 0)
            assert int((w != 0).sum()) <= int(m.sum())
        self.checked += 1


def test_density_reaches_the_target_at_t_e_masks_shrink_and_masked_weights_stay_zero(
    tmp_path: Path, data: Path
) -> None:
    steps = 50
    cfg = pruned_config(tmp_path, data, steps=steps, options={"every": 3})
    trainer = Trainer(cfg)
    p = pruner(trainer)
    spy, after = Spy(p), AfterEveryStep(p)
    trainer.callbacks.insert(0, spy)
    trainer.callbacks.append(after)
    end = trainer.fit()
    assert after.checked == steps

    events = pruning_steps(steps, 0.25, 0.75, 3)
    assert events == [13, 16, 19, 21, 24, 27, 30, 32, 35, 38]  # t_s = round(12.5), t_e = round(37.5), 9 gaps
    assert spy.events_seen == events  # every event pruned something, no other step did
    names = [n for n, _, _ in prunable_weights(trainer.module)]
    assert names == [f"blocks.{b}.{m}.weight" for b in range(2) for m in ("attn.qkv", "attn.out", "mlp.gate_up",
                                                                          "mlp.down")]
    n = p.n_prunable
    assert n == sum(w.numel() for w in p.weights)
    final = round(n * (1 - SPARSITY))
    lines = train_lines(trainer.run_dir)
    assert [r["step"] for r in lines] == list(range(1, steps + 1))
    k_of = {i: sum(t < i for t in events) for i in range(1, steps + 1)}  # events before training step i
    for r in lines:
        live = target_live(k_of[r["step"]], len(events), n, final)
        assert r["density"] == live / n
        assert r["live_params"] == trainer.param_counts["params_non_embedding"] - (n - live)
        assert r["flops_per_token_live"] == trainer.flops_per_token - 6 * (n - live)
    # from the step after t_e on, the density is 1 - S (the live count exactly round(n (1 - S))) and stays
    assert {r["density"] for r in lines if r["step"] > events[-1]} == {final / n}
    assert abs(final / n - (1 - SPARSITY)) <= 0.5 / n
    assert sum(int(m.sum()) for m in p.masks) == final
    assert sum(int((w != 0).sum()) for w in p.weights) == final  # the surviving weights are non-zero
    # N-bar: the exact mean over every step, the analytic value of the geometric schedule, in the end line
    non_emb = trainer.param_counts["params_non_embedding"]
    analytic = expected_avg_params(non_emb, n, steps, SPARSITY, 0.25, 0.75, 3)
    assert end["avg_params"] == analytic == sum(r["live_params"] for r in lines) / steps
    assert lines[-1]["avg_params"] == analytic and end["live_params"] == non_emb - (n - final)
    assert end["density"] == final / n and end["flops_per_token"] == trainer.flops_per_token


class AfterStep(Callback):
    """Registers, after the pruner did, an optimiser step post-hook recording how many pruned entries are
    non-zero right after each optimizer.step()."""

    name = "test_after_step"

    def on_train_start(self, trainer: Trainer) -> None:
        self.seen: list[int] = []
        p = pruner(trainer)

        def hook(*_: Any) -> None:
            self.seen.append(sum(int(torch.count_nonzero(w[d])) for w, d in zip(p.weights, p.dead)) if p.pruned else 0)

        self.handle = trainer.optimizer.register_step_post_hook(hook)

    def on_train_end(self, trainer: Trainer) -> None:
        self.handle.remove()


@pytest.mark.parametrize("optim", ["galore", "fira"])
def test_pruned_entries_are_zero_right_after_every_step_of_a_projecting_optimiser(
    tmp_path: Path, data: Path, optim: str
) -> None:
    """GaLore and Fira move weights whose gradient is 0 (a projected update; Fira's residual): the pruner's
    step post-hook re-zeroes them before anything after optimizer.step() sees them."""
    cfg = pruned_config(tmp_path, data, steps=12, options={"every": 2},
                        optim={"name": optim, "lr": 1e-2, "weight_decay": 0.1,
                               "options": {"rank": 4, "min_dim": 8, "update_proj_gap": 3}})
    trainer = Trainer(cfg)
    spy = AfterStep()
    trainer.callbacks.append(spy)
    trainer.fit()
    p = pruner(trainer)
    assert len(spy.seen) == 12 and p.pruned and p.live / p.n_prunable == pytest.approx(1 - SPARSITY, abs=1e-3)
    assert spy.seen == [0] * 12


def test_ties_are_broken_by_position_and_the_count_is_exact() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False)])

    model = Two()
    with torch.no_grad():
        for lin in model.blocks:
            lin.weight.fill_(1.0)  # all 18 magnitudes tie
    cb = GradualPruning(sparsity=0.5, start=0.0, end=0.0)
    cb.weights = [lin.weight for lin in model.blocks]
    cb.masks = [torch.ones_like(w, dtype=torch.bool) for w in cb.weights]
    cb.own_masks = [None, None]
    cb.n_prunable, cb.live, cb.events = 18, 18, [0]
    assert cb.prune(1) == 9
    assert cb.masks[0].flatten().tolist() == [False] * 9 + [True] * 3  # the first 9 in position order
    assert cb.masks[1].all() and cb.live == 9
    assert float(model.blocks[0].weight.detach().abs().sum()) == 3.0


def test_masked_linear_masks_count_as_pruned_and_are_narrowed(tmp_path: Path, data: Path) -> None:
    cfg = pruned_config(tmp_path, data, steps=12, model={"n_layers": 2, "d_model": 32, "n_heads": 2,
                                                          "linear": "masked", "linear_options": {"sparsity": 0.25}})
    trainer = Trainer(cfg)
    end = trainer.fit()
    p = pruner(trainer)
    layers = [m for m in trainer.module.modules() if isinstance(m, MaskedLinear)]
    assert len(layers) == len(p.weights) == 8  # qkv, out, gate_up, down in 2 blocks
    assert p.initial_live == sum(round(0.75 * m.weight.numel()) for m in layers)  # SPDF's mask: pruned already
    final = round(p.n_prunable * (1 - SPARSITY))
    assert end["density"] == final / p.n_prunable and p.live == final
    for layer, mask in zip(layers, p.masks):
        assert torch.equal(layer.mask, mask) and torch.all(layer.weight[~mask] == 0)


# ---------------------------------------------------------------------------------------------- resume


def test_a_pruned_run_resumes_bitwise_from_any_checkpoint(tmp_path: Path, data: Path) -> None:
    """16 steps, events at 4, 6, 8, 10, 12 (before training steps 5, 7, ...), checkpoints at 5, 10, 15:
    resumed in a fresh Trainer from step 5 (mid schedule) and from step 10 (an event is due right after)."""
    cfg = pruned_config(tmp_path, data, steps=16, options={"every": 2},
                        train={"checkpoint_every": 5, "keep_checkpoints": 5})
    ref = Trainer(cfg)
    ref.fit()
    ref_lines = {r["step"]: r for r in train_lines(ref.run_dir)}
    ref_weights = {k: v.clone() for k, v in ref.module.state_dict().items()}
    assert [c.name for c in list_checkpoints(ref.run_dir)] == ["step-5", "step-10", "step-15", "step-16"]
    _, state = load_checkpoint(ref.run_dir / "checkpoints" / "step-10")
    saved = state["callbacks"]["gradual_pruning"]
    assert saved["steps_counted"] == 10 and saved["masks"]["blocks.0.attn.qkv.weight"].dtype == torch.bool

    for step in (5, 10):
        name = f"resumed{step}"
        run = tmp_path / name
        shutil.copytree(ref.run_dir, run)
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("name: tiny", f"name: {name}"))
        for later in list_checkpoints(run):
            if int(later.name.split("-")[1]) > step:
                shutil.rmtree(later)
        resumed = Trainer(cfg.model_copy(update={"name": name}), resume=True)
        assert resumed.step == step
        resumed.fit()
        lines = {r["step"]: r for r in train_lines(run)}
        assert sorted(lines) == list(range(1, 17))
        for s, r in ref_lines.items():  # bitwise: loss, gradient norm, live count and N-bar
            assert [lines[s][k] for k in ("loss", "grad_norm", "live_params", "avg_params")] == \
                [r[k] for k in ("loss", "grad_norm", "live_params", "avg_params")], (step, s)
        for k, v in resumed.module.state_dict().items():
            assert torch.equal(v, ref_weights[k]), (step, k)


# ---------------------------------------------------------------------------------------------- sweep column


def test_the_sweep_takes_the_exact_avg_params_of_the_end_line(tmp_path: Path, data: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With log_every > 1 the mean of the logged live_params is a subsample; the end line's avg_params is the
    mean over every step, and results.csv (`fit --x avg_params`) uses it."""
    from pretrainlab.science.sweep import load_results, resolve_sweep, write_sweep_folder

    steps = 20
    cfg = pruned_config(tmp_path / "runs", data, steps=steps, options={"every": 2}, train={"log_every": 7})
    run = Trainer(cfg)
    end = run.fit()
    logged = [r["live_params"] for r in train_lines(run.run_dir)]
    assert len(logged) == 4  # steps 1, 7, 14, 20
    n = run.param_counts["params_non_embedding"]
    assert end["avg_params"] == expected_avg_params(n, pruner(run).n_prunable, steps, SPARSITY, every=2)
    assert end["avg_params"] != sum(logged) / len(logged)

    monkeypatch.chdir(tmp_path)
    spec = {"name": "s", "out_dir": "sweeps", "base": cfg.model_dump(mode="json"),
            "axes": [{"grid": {"optim.lr": [cfg.optim.lr]}}]}
    sweep = resolve_sweep(spec)
    folder = write_sweep_folder(sweep, executor="local", jobs=1)
    point = folder / "runs" / sweep.points[0].name
    point.mkdir(parents=True)
    shutil.copy(run.run_dir / "metrics.jsonl", point / "metrics.jsonl")
    rows = load_results(folder)
    assert rows[0]["status"] == "done" and rows[0]["avg_params"] == end["avg_params"]
    assert math.isclose(float(json.loads((point / "metrics.jsonl").read_text().splitlines()[-1])["avg_params"]),
                        end["avg_params"])


# ---------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_two_ddp_processes_prune_alike_and_match_one(tmp_path: Path, data: Path) -> None:
    """Every rank prunes its own replica; the replicas are bitwise equal, so the masks are (each event checks
    it with an all-reduce, which would stop the run), and they equal the single-process run's masks."""
    import os
    import socket
    import subprocess
    import sys

    import torch.distributed as dist
    import yaml

    if not dist.is_gloo_available():
        pytest.skip("gloo unavailable")
    cfg = pruned_config(tmp_path / "runs", data, steps=12, options={"every": 2},
                        train={"micro_batch_size": 4}, name="one", device="cpu")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "pretrainlab", "train", str(tmp_path / "cfg.yaml"), "name=two", "parallel=ddp"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    Trainer(cfg).fit()
    runs = tmp_path / "runs"
    masks = [load_checkpoint(runs / n / "checkpoints" / "step-12")[1]["callbacks"]["gradual_pruning"]["masks"]
             for n in ("one", "two")]
    assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    one, two = (train_lines(runs / n) for n in ("one", "two"))
    assert [r["live_params"] for r in one] == [r["live_params"] for r in two]
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in two], rel=1e-5)
