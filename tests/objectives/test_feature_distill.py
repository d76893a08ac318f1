"""Objective `feature_distill` (PELA's intermediate pretraining): kappa = 0 is next_token exactly, the loss and
its gradient are CE + kappa * mean block-output MSE computed by hand, a short run lowers feature_mse, and a
teacher of another depth or width is refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.config import ModelConfig
from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError
from pretrainlab.model import build_model
from pretrainlab.objectives import build_objective
from pretrainlab.objectives.feature_distill import FeatureDistill

pytestmark = pytest.mark.usefixtures("one_thread")


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fdistill")
    rng = np.random.default_rng(0)
    data = make_prepared(tmp / "prepared", train={"a": markov_docs(rng, 80)}, val={"a": markov_docs(rng, 4)})
    teacher = train_run(tiny_run_config(tmp / "runs", data, name="teacher", seed=7, train={"steps": 20},
                                        optim={"lr": 1e-2}, eval={"every": None}))
    return {"tmp": tmp, "data": data, "teacher": teacher}


def _student(setup, name: str, **sections):
    return tiny_run_config(setup["tmp"] / "students", setup["data"], name=name, **sections)


def test_kappa_zero_trains_exactly_like_next_token(setup):
    common = {"train": {"steps": 4, "micro_batch_size": 4}}
    plain = train_run(_student(setup, "plain", **common))
    fd = train_run(_student(setup, "kappa0", objective="feature_distill", objective_options={"kappa": 0.0},
                            teacher=str(setup["teacher"]), **common))
    keys = ("step", "tokens", "loss", "grad_norm", "val_loss")
    assert [{k: r.get(k) for k in keys} for r in _lines(plain)] == [{k: r.get(k) for k in keys} for r in _lines(fd)]
    train_lines = [r for r in _lines(fd) if "lr" in r]
    assert all(r["ce"] == pytest.approx(r["loss"], rel=1e-12) and "feature_mse" not in r for r in train_lines)


def test_short_run_lowers_feature_mse_and_logs_token_means(setup):
    kappa = 20.0
    run = train_run(_student(setup, "fd", objective="feature_distill", objective_options={"kappa": kappa},
                             teacher=str(setup["teacher"]), train={"steps": 15, "micro_batch_size": 4},
                             optim={"lr": 1e-2}, eval={"every": None}))
    lines = [r for r in _lines(run) if "lr" in r]
    for r in lines:  # two micro-batches a step: the means recombine into the step's loss
        assert r["loss"] == pytest.approx(r["ce"] + kappa * r["feature_mse"], rel=1e-6)
    first, last = lines[0]["feature_mse"], lines[-1]["feature_mse"]
    print(f"feature_mse step 1 {first:.5f} -> step {len(lines)} {last:.5f}")
    assert last < 0.5 * first
    assert _lines(run)[-1]["teacher_total_s"] > 0


# ---------------------------------------------------------------------- the loss and gradient, by hand


def _batch(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> Batch:
    """Rows of T + 1 tokens (inputs tokens[:, :-1], targets tokens[:, 1:]); `mask` (B, T) over the targets."""
    loss_mask = None if mask is None else torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
    return Batch(tokens=tokens, loss_mask=loss_mask, domains=torch.zeros(tokens.shape[0], dtype=torch.long))


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=3, d_model=16, n_heads=2, n_kv_heads=2, mlp_hidden=32, vocab_size=40, max_seq_len=8,
                      init_std=0.3)
    return build_model(cfg).double()


def _by_hand(student, teacher, tokens, targets, kappa: float) -> torch.Tensor:
    def blocks(model):
        x, outs = model.embed(tokens), []
        for block in model.blocks:
            x = block(x, model.rope[: tokens.shape[1]])
            outs.append(x)
        return model.norm(x), outs

    h, hs = blocks(student)
    with torch.no_grad():
        _, ht = blocks(teacher)
    ce = F.cross_entropy(student.logits(h).flatten(0, 1), targets.flatten())
    mse = torch.stack([F.mse_loss(a, b) for a, b in zip(hs, ht)]).mean()
    return ce + kappa * mse


def test_loss_and_gradient_are_ce_plus_kappa_block_mse():
    student, teacher = _tiny(0), _tiny(1)
    batch = _batch(torch.randint(0, 40, (2, 9)))
    objective = FeatureDistill(kappa=0.7)
    objective.set_teacher(teacher)
    objective._plain.fused = False  # the double-precision reference uses the plain head
    loss = objective(student, batch).loss
    grads = torch.autograd.grad(loss, list(student.parameters()))
    expected = _by_hand(student, teacher, batch.inputs, batch.targets, 0.7)
    want = torch.autograd.grad(expected, list(student.parameters()))
    # next_token computes its cross-entropy in float32; the feature term stays in the model's float64
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    for g, w in zip(grads, want):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-7)
    # and the MSE term's gradient against central differences on a few entries of a block's weight (the
    # norms compute in float32, so the step is 1e-3 rather than 1e-6)
    p = student.blocks[1].mlp.down.weight

    plain = FeatureDistill(kappa=0.0)

    def feature_term() -> torch.Tensor:  # the float32 cross-entropy sums cancel exactly
        return (objective(student, batch).loss_sum - plain(student, batch).loss_sum) / 16

    g_mse = torch.autograd.grad(feature_term(), p)[0]
    for idx in [(0, 0), (3, 7), (15, 31)]:
        old = float(p[idx].detach())
        with torch.no_grad():
            p[idx] = old + 1e-3
            up = float(feature_term())
            p[idx] = old - 1e-3
            down = float(feature_term())
        with torch.no_grad():
            p[idx] = old
        assert (up - down) / 2e-3 == pytest.approx(float(g_mse[idx]), rel=1e-3, abs=1e-7)


def test_target_mask_excludes_positions():
    student, teacher = _tiny(0), _tiny(1)
    tokens = torch.randint(0, 40, (2, 9))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True
    batch = _batch(tokens, mask)
    objective = FeatureDistill(kappa=1.0)
    objective.set_teacher(teacher)
    out = objective(student, batch)
    cut = _batch(tokens[:, :4])
    # causal: the first 3 positions' hidden states do not depend on the later ones
    assert out.n_tokens == 6
    assert float(out.loss.detach()) == pytest.approx(float(objective(student, cut).loss.detach()), rel=1e-6)


# ---------------------------------------------------------------------- errors before the run folder exists


def _fails_before_folder(cfg, match: str) -> None:
    from pretrainlab.train.trainer import Trainer

    with pytest.raises(ConfigError, match=match):
        Trainer(cfg)
    assert not (Path(cfg.out_dir) / cfg.name).exists()


def test_teacher_of_another_shape_or_none_is_refused(setup):
    teacher = str(setup["teacher"])
    _fails_before_folder(_student(setup, "none", objective="feature_distill"),
                         r"objective 'feature_distill' needs a teacher")
    _fails_before_folder(_student(setup, "deep", objective="feature_distill", teacher=teacher,
                                  model={"n_layers": 3, "d_model": 32, "n_heads": 2}),
                         r"has n_layers=2 but the student's model\.n_layers=3")
    _fails_before_folder(_student(setup, "wide", objective="feature_distill", teacher=teacher,
                                  model={"n_layers": 2, "d_model": 64, "n_heads": 2}),
                         r"has d_model=32 but the student's model\.d_model=64")
    _fails_before_folder(_student(setup, "two", objective="feature_distill", teacher=[teacher, teacher]),
                         r"matches the blocks of one teacher, got 2 runs")


@pytest.mark.parametrize("options", [{"kappa": -1}, {"kappa": "x"}, {"kappa": True}, {"alpha": 0.5}])
def test_bad_options_name_their_field(options):
    with pytest.raises(ConfigError, match=r"objective_options\.(kappa|alpha)"):
        build_objective("feature_distill", options)


def test_the_teacher_meters_share_one_implementation_that_prints_without_a_trainer_say(capsys):
    """feature_distill's meter is distill's bookkeeping (TeacherMeter), with its print fallback for a trainer
    without `_say` (main process only) and the teacher-cost line at the end."""
    from types import SimpleNamespace

    from pretrainlab.objectives.distill import DistillMeter, TeacherMeter
    from pretrainlab.objectives.feature_distill import FeatureDistillMeter

    assert issubclass(FeatureDistillMeter, TeacherMeter) and issubclass(DistillMeter, TeacherMeter)
    meter = FeatureDistillMeter(FeatureDistill(kappa=1.0), "RUN")
    trainer = SimpleNamespace(is_main=True, elapsed_s=2.0)
    meter.on_train_start(trainer)
    metrics = {"fd_tokens": 4.0, "ce_sum": 8.0, "feature_mse_sum": 2.0, "teacher_s": 0.5}
    meter.on_step_end(trainer, metrics)
    assert metrics == {"ce": 2.0, "feature_mse": 0.5, "teacher_s": 0.5, "teacher_total_s": 0.5}
    meter.on_train_end(trainer)
    out = capsys.readouterr().out
    assert "teacher      RUN; feature distillation, kappa 1" in out and "teacher cost 0.5 s of 2.0 s" in out
    quiet = FeatureDistillMeter(FeatureDistill(kappa=0.0), "RUN")
    quiet.on_train_start(SimpleNamespace(is_main=False, elapsed_s=0.0))
    quiet.on_train_end(SimpleNamespace(is_main=True, elapsed_s=0.0))  # kappa 0: the teacher never ran
    assert capsys.readouterr().out == ""
    assert meter.state_dict() == {"teacher_total_s": 0.5}
