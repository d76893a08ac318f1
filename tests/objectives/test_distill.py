"""Objective `distill`: alpha = 0 is next_token, the gradient is the textbook one, a distilled student moves
toward its teacher, metrics are per-token means, and a bad teacher or option fails before the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.data.batch import Batch
from pretrainlab.errors import ConfigError
from pretrainlab.objectives import build_objective
from pretrainlab.objectives.distill import Distill


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Prepared data, and a teacher trained on other data from another chain (same byte tokenizer), so its
    predictions are something the student's data alone does not teach."""
    tmp = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(0)
    data = make_prepared(
        tmp / "prepared",
        train={"alpha": markov_docs(rng, 120), "beta": markov_docs(rng, 60, 300)},
        val={"alpha": markov_docs(rng, 8), "beta": markov_docs(rng, 4, 300)},
    )
    teacher_data = make_prepared(tmp / "teacher_data", train={"alpha": markov_docs(rng, 120, chain=456)},
                                 val={"alpha": markov_docs(rng, 4, chain=456)})
    teacher = train_run(tiny_run_config(tmp / "runs", teacher_data, name="teacher", seed=7, train={"steps": 30},
                                     optim={"lr": 1e-2}, eval={"every": None}))
    return {"tmp": tmp, "data": data, "teacher": teacher}


def _student(setup, name: str, **sections):
    return tiny_run_config(setup["tmp"] / "students", setup["data"], name=name, **sections)


# ---------------------------------------------------------------------- training equivalence and metrics


def test_alpha_zero_trains_exactly_like_next_token(setup):
    common = {"train": {"steps": 5, "micro_batch_size": 4}}
    plain = train_run(_student(setup, "plain", **common))
    distilled = train_run(_student(setup, "alpha0", objective="distill", objective_options={"alpha": 0.0},
                                teacher=str(setup["teacher"]), **common))
    keys = ("step", "tokens", "loss", "grad_norm", "val_loss")
    a = [{k: r.get(k) for k in keys} for r in _lines(plain)]
    b = [{k: r.get(k) for k in keys} for r in _lines(distilled)]
    assert a == b  # bitwise: the same floats, line by line
    train_lines = [r for r in _lines(distilled) if "lr" in r]
    assert all(r["ce"] == pytest.approx(r["loss"], rel=1e-12) for r in train_lines)
    assert "kl" not in train_lines[0] and _lines(distilled)[-1]["teacher_total_s"] == 0.0


def test_logged_ce_and_kl_are_token_means_and_teacher_cost_is_apart(setup):
    alpha, t = 0.3, 2.0
    run = train_run(_student(setup, "mix", objective="distill", objective_options={"alpha": alpha, "temperature": t},
                          teacher=[str(setup["teacher"]), str(setup["teacher"])],  # an ensemble teacher
                          train={"steps": 3, "micro_batch_size": 2}, data={"mode": "packed"}))
    lines = _lines(run)
    train_lines = [r for r in lines if "lr" in r]
    assert len(train_lines) == 3
    for r in train_lines:  # 4 micro-batches, masked (packed) rows: the means recombine into the step's loss
        assert r["loss"] == pytest.approx((1 - alpha) * r["ce"] + alpha * t * t * r["kl"], rel=1e-6)
        assert r["kl"] > 0 and r["teacher_s"] > 0
    end = lines[-1]
    assert end["event"] == "end"
    assert end["teacher_total_s"] == pytest.approx(sum(r["teacher_s"] for r in train_lines), abs=1e-5)


def test_distilled_student_gets_closer_to_the_teacher(setup):
    from pretrainlab.eval.load import load_run

    common = {"train": {"steps": 15}, "optim": {"lr": 1e-2}, "eval": {"every": None}}
    plain = train_run(_student(setup, "s_plain", **common))
    distilled = train_run(_student(setup, "s_kl", objective="distill", objective_options={"alpha": 1.0},
                                teacher=str(setup["teacher"]), **common))
    teacher = load_run(setup["teacher"])[0]
    rows = torch.from_numpy(load_run(plain)[2].shard("alpha", "val").tokens[:8 * 33].astype(np.int64))
    inputs = rows.view(8, 33)[:, :-1]

    def kl_to_teacher(run: Path) -> float:
        student = load_run(run)[0]
        with torch.no_grad():
            p = torch.log_softmax(teacher.logits(teacher(inputs)), -1)
            q = torch.log_softmax(student.logits(student(inputs)), -1)
            return float(F.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean())

    assert kl_to_teacher(distilled) < 0.5 * kl_to_teacher(plain)


# ---------------------------------------------------------------------- the gradient, by hand


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are a tensor (a parameter for the student): `logits` is the identity."""

    def __init__(self, z: torch.Tensor, *, trainable: bool) -> None:
        super().__init__()
        self.z = torch.nn.Parameter(z.clone(), requires_grad=trainable)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.z

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_gradient_is_the_textbook_distillation_gradient():
    torch.manual_seed(0)
    B, T, V, alpha, temp = 2, 5, 7, 0.7, 2.0
    student = _Fixed(torch.randn(B, T, V) * 2, trainable=True)
    teacher_z = torch.randn(B, T, V) * 3
    tokens = torch.randint(0, V, (B, T + 1))
    mask = torch.ones(B, T + 1, dtype=torch.bool)
    mask[0, 3:] = False  # three masked targets
    batch = Batch(tokens=tokens, loss_mask=mask, domains=torch.zeros(B, dtype=torch.long))

    objective = Distill(alpha=alpha, temperature=temp)
    objective.set_teacher([_Fixed(teacher_z, trainable=False)])
    out = objective(student, batch)
    out.loss_sum.backward()

    z = student.z.detach().double()
    p_t = torch.softmax(teacher_z.double() / temp, -1)
    q_t = torch.softmax(z / temp, -1)
    one_hot = F.one_hot(tokens[:, 1:], V).double()
    m = mask[:, 1:].double()[..., None]
    # d/dz [(1-a) CE + a T^2 KL(p_T || q_T)] = (1-a)(softmax(z) - y) + a T (q_T - p_T), at counted targets.
    expected_grad = m * ((1 - alpha) * (torch.softmax(z, -1) - one_hot) + alpha * temp * (q_t - p_t))
    assert torch.allclose(student.z.grad.double(), expected_grad, atol=1e-6)
    ce = -(one_hot * torch.log_softmax(z, -1)).sum(-1)
    kl = (p_t * (p_t.log() - q_t.log())).sum(-1)
    expected_sum = ((1 - alpha) * ce + alpha * temp**2 * kl)[mask[:, 1:]].sum()
    assert float(out.loss_sum.detach()) == pytest.approx(float(expected_sum), rel=1e-5)
    assert out.n_tokens == B * T - 3
    assert out.metrics["distill_tokens"] == B * T - 3 and out.metrics["teacher_s"] >= 0


def test_ensemble_teacher_is_combined_before_the_temperature():
    torch.manual_seed(1)
    a, b = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    objective = Distill(alpha=1.0, temperature=3.0)
    objective.set_teacher([_Fixed(a, trainable=False), _Fixed(b, trainable=False)], "logits")
    logp, _ = objective.teacher_log_probs(torch.zeros(1, 4, dtype=torch.long))
    assert torch.allclose(logp, torch.log_softmax((a + b) / 2 / 3.0, -1), atol=1e-6)
    assert not logp.is_inference()  # usable by autograd outside inference mode
    objective.set_teacher([_Fixed(a, trainable=False), _Fixed(b, trainable=False)], "probs")
    logp, _ = objective.teacher_log_probs(torch.zeros(1, 4, dtype=torch.long))
    mixture = (torch.softmax(a, -1) + torch.softmax(b, -1)) / 2
    assert torch.allclose(logp, torch.log_softmax(mixture.log() / 3.0, -1), atol=1e-6)


# ---------------------------------------------------------------------- errors before the run folder exists


def _fails_before_folder(cfg, match: str) -> None:
    from pretrainlab.train.trainer import Trainer

    with pytest.raises(ConfigError, match=match):
        Trainer(cfg)
    assert not (Path(cfg.out_dir) / cfg.name).exists()


def test_missing_teacher_fails_before_the_run_folder(setup):
    _fails_before_folder(_student(setup, "no_teacher", objective="distill"),
                         r"objective 'distill' needs a teacher: set teacher=RUN_DIR")
    _fails_before_folder(_student(setup, "gone", objective="distill", teacher=str(setup["tmp"] / "nowhere")),
                         r"^teacher: run folder .*nowhere.* does not exist")


def test_teacher_that_does_not_fit_the_student_is_refused(setup):
    _fails_before_folder(_student(setup, "long", objective="distill", teacher=str(setup["teacher"]),
                                  data={"seq_len": 64}, train={"global_batch_tokens": 64 * 8}),
                         r"at most 32 tokens, shorter than data.seq_len=64")
    _fails_before_folder(_student(setup, "wide", objective="distill", teacher=str(setup["teacher"]),
                                  model={"vocab_size": 300}),
                         r"predicts over 258 tokens but the student's vocabulary is 300")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"alpha": 1.5}, "objective_options.alpha"),
        ({"alpha": -0.1}, "objective_options.alpha"),
        ({"alpha": "half"}, "objective_options.alpha"),
        ({"alpha": True}, "objective_options.alpha"),
        ({"temperature": 0}, "objective_options.temperature"),
        ({"temperature": math.nan}, "objective_options.temperature"),
        ({"beta": 1}, "objective_options.beta"),
    ],
)
def test_bad_options_name_their_field(options, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_objective("distill", options)


def test_defaults():
    objective = build_objective("distill")
    assert isinstance(objective, Distill) and objective.alpha == 0.5 and objective.temperature == 1.0


def test_teacher_total_survives_a_resume(setup):
    from pretrainlab.train.trainer import Trainer

    options = {"objective": "distill", "objective_options": {"alpha": 0.5}, "teacher": str(setup["teacher"])}
    train_run(_student(setup, "resumed", train={"steps": 2}, **options))
    trainer = Trainer(_student(setup, "resumed", train={"steps": 4}, **options), resume=True)
    assert trainer.step == 2
    trainer.fit()
    lines = _lines(Path(trainer.run_dir))
    train_lines = [r for r in lines if "lr" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4]
    assert lines[-1]["teacher_total_s"] == pytest.approx(sum(r["teacher_s"] for r in train_lines), abs=1e-5)


def test_teacher_clock_starts_after_the_queued_student_work(monkeypatch):
    """On CUDA the student's forward is still queued when the teacher starts: the device is synchronised
    before the clock starts and before it stops, so `teacher_s` is the teacher's time alone."""
    import pretrainlab.objectives.distill as distill

    events: list[str] = []

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            events.append("clock")
            return float(len(events))

    monkeypatch.setattr(distill, "time", Clock)
    monkeypatch.setattr(distill, "wait_for_device", lambda device: events.append(f"wait {device.type}"))
    objective = Distill(alpha=1.0)
    objective.set_teacher([_Fixed(torch.randn(1, 4, 6), trainable=False)])
    objective.teacher_log_probs(torch.zeros(1, 4, dtype=torch.long))
    assert events == ["wait cpu", "clock", "wait cpu", "clock"]


def test_waiting_for_the_device_synchronises_cuda_only(monkeypatch):
    import pretrainlab.objectives.distill as distill

    synced: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    distill.wait_for_device(torch.device("cpu"))
    assert synced == []
    distill.wait_for_device(torch.device("cuda", 1))
    assert synced == [torch.device("cuda", 1)]
