"""The `mixing_agent` callback in real tiny runs: weights change and stay a probability vector, NaN losses keep
the previous weights, stop/resume is exact, bad options are ConfigErrors, and the whole loop from the CLI
(random exploration runs -> `pretrainlab mixing-policy` -> a run with the fitted linear policy)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import make_prepared, markov_docs, random_docs, tiny_run_config, train_run
from pretrainlab.cli import main
from pretrainlab.config import RunConfig
from pretrainlab.errors import ConfigError
from pretrainlab.eval.domain_losses import DomainLosses
from pretrainlab.train.callbacks import Callback, build_callbacks
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer

DOMAINS = ["a", "b"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a: a learnable Markov chain; b: random bytes (nothing to learn)."""
    rng = np.random.default_rng(0)
    train = {"a": markov_docs(rng, 60, chain=1), "b": random_docs(rng, 60)}
    val = {"a": markov_docs(rng, 6, chain=1), "b": random_docs(rng, 6)}
    return make_prepared(tmp_path_factory.mktemp("mixing") / "prepared", train=train, val=val)


def _cfg(tmp_path: Path, data: Path, name: str, steps: int = 12, **options) -> RunConfig:
    opts = {"every": 3, "val_tokens": 256, **options}
    return tiny_run_config(tmp_path, data, name=name, train={"steps": steps, "deterministic": True},
                           model={"n_layers": 2, "d_model": 32, "n_heads": 2, "dropout": 0.1},  # draws RNG
                           eval={"every": None, "max_tokens_per_domain": 256},
                           callbacks=[{"name": "mixing_agent", "options": opts}])


def _train_lines(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "lr" in r]


def _agent_lines(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "mixing_agent"]


def _weights(line: dict) -> list[float]:
    return [line[f"mixing_agent/weight/{d}"] for d in DOMAINS]


def test_weights_move_toward_the_learnable_domain_and_stay_a_probability_vector(data: Path, tmp_path: Path) -> None:
    run = train_run(_cfg(tmp_path, data, "run"))
    lines = _train_lines(run)
    for r in lines:
        w = _weights(r)
        assert min(w) >= 0.0 and math.isclose(sum(w), 1.0, rel_tol=1e-12)
        assert r["domain_weights"] == pytest.approx(dict(zip(DOMAINS, w)), rel=1e-12)  # the loader drew with them
    assert _weights(lines[-1])[0] > _weights(lines[0])[0] + 0.1  # 'a' is learnable, 'b' is noise
    agent = _agent_lines(run)
    assert [r["step"] for r in agent] == [0, 3, 6, 9]
    assert all("reward" in r["mixing_agent"] and len(r["transition"]["state"]) == 6 for r in agent[1:])
    assert all(w >= 0.1 * 0.5 for r in lines for w in _weights(r))  # the floor keeps b drawn


class _StopAt(Callback):
    name = "test_stop"

    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, metrics):
        if trainer.step == self.at:
            trainer.request_stop("test")


@pytest.mark.parametrize("stop_at", [4, 6])  # mid-interval, and right after a re-weighting
def test_stop_and_resume_mid_run_is_exact(data: Path, tmp_path: Path, stop_at: int) -> None:
    opts = {"target": "b", "source_weight": 0.3, "window": 2}
    whole = train_run(_cfg(tmp_path, data, "whole", **opts))
    first = Trainer(_cfg(tmp_path, data, "split", **opts))
    first.callbacks.append(_StopAt(stop_at))
    first.fit()
    Trainer(_cfg(tmp_path, data, "split", **opts), resume=True).fit()
    a, b = _train_lines(whole), _train_lines(tmp_path / "split")
    keys = [k for k in a[0] if k not in ("tokens_per_s", "mfu")]
    assert any(k.startswith("mixing_agent/weight/") for k in keys)
    assert [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]
    assert _agent_lines(whole) == _agent_lines(tmp_path / "split")
    from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint

    wa = load_checkpoint(find_latest_checkpoint(whole))[0]
    wb = load_checkpoint(find_latest_checkpoint(tmp_path / "split"))[0]
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_losses_keep_the_previous_weights(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture, bad: float) -> None:
    real = DomainLosses.of
    calls = []

    def flaky(self, trainer):
        calls.append(trainer.step)
        out = real(self, trainer)
        return {**out, "a": bad} if trainer.step == 6 else out

    monkeypatch.setattr(DomainLosses, "of", flaky)
    run = train_run(_cfg(tmp_path, data, "nan"))
    assert calls == [0, 3, 6, 9]
    assert "mixing_agent at step 6: validation loss of a is" in capsys.readouterr().out
    w = {r["step"]: _weights(r) for r in _train_lines(run)}
    assert w[7] == w[6] and w[4] != w[3]  # step 6's re-weighting skipped; step 3's applied
    agent = {r["step"]: r for r in _agent_lines(run)}
    assert 6 not in agent and "transition" not in agent[9]  # no reward across the skipped measurement
    assert all(min(v) >= 0 and math.isclose(sum(v), 1.0, rel_tol=1e-12) for v in w.values())


def test_a_policy_proposing_garbage_keeps_the_weights(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from pretrainlab.recipes.mixing_policy import HeuristicPolicy

    monkeypatch.setattr(HeuristicPolicy, "propose", lambda self, obs: np.asarray([np.nan, 1.0]))
    run = train_run(_cfg(tmp_path, data, "garbage", steps=6))
    assert "proposed no finite probability vector" in capsys.readouterr().out
    assert all(_weights(r) == _weights(_train_lines(run)[0]) for r in _train_lines(run))


@pytest.mark.parametrize("options, message", [
    ({"every": 0}, r"callbacks.0.options.every: every=0 must be an integer >= 1"),
    ({"policy": "cql"}, r"callbacks.0.options.policy: policy='cql' is not a known mixing policy"),
    ({"floor": 1.5}, r"callbacks.0.options.floor: floor=1.5 must be a number in \[0, 1\]"),
    ({"temperature": 0}, r"callbacks.0.options.temperature: temperature=0 must be a number > 0"),
    ({"policy": "random", "temperature": 1.0}, r"temperature set the heuristic policy's rule"),
    ({"policy": "linear"}, r"policy_path .* is required by policy=linear"),
    ({"policy_path": "p.json"}, r"policy_path .* is required by policy=linear and only by it"),
    ({"source_weight": 0.5}, r"source_weight balances source against target domains: give target too"),
    ({"target": []}, r"target=\[\] must be a domain name or a non-empty list"),
    ({"speed": 2}, r"callbacks.0.options.speed: the 'mixing_agent' callback has no option 'speed'"),
])
def test_bad_options_are_config_errors(options: dict, message: str) -> None:
    from pretrainlab.config import CallbackConfig

    with pytest.raises(ConfigError, match=message):
        build_callbacks([CallbackConfig(name="mixing_agent", options=options)])


def test_data_dependent_errors_name_the_option(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"callbacks.0.options.target names unknown domain 'z'"):
        Trainer(_cfg(tmp_path, data, "t", target=["a", "z"])).fit()
    tree = _cfg(tmp_path, data, "w", target="b").model_dump()
    tree["data"]["weights"] = {"a": 1.0}  # the target would never be drawn nor measured
    with pytest.raises(ConfigError, match=r"callbacks.0.options.target names domain 'b', which the prior"):
        Trainer(RunConfig.model_validate(tree)).fit()
    policy = tmp_path / "p.json"
    policy.write_text('{"domains": ["x", "y"], "W": [[0,0,0,0,0,0],[0,0,0,0,0,0]], "b": [0, 0]}')
    with pytest.raises(ConfigError, match=r"callbacks.0.options.policy_path: the policy was fitted for domains"):
        Trainer(_cfg(tmp_path, data, "p", policy="linear", policy_path=str(policy))).fit()
    tree = _cfg(tmp_path, data, "s").model_dump()
    tree["data"]["stages"] = [{"weights": {"a": 1.0}, "until_tokens": 512}, {"weights": {"b": 1.0}}]
    with pytest.raises(ConfigError, match=r"callbacks.0 \(mixing_agent\): data.stages is set"):
        Trainer(RunConfig.model_validate(tree)).fit()


def test_explore_fit_and_deploy_from_the_command_line(data: Path, tmp_path: Path, capsys) -> None:
    """`pretrainlab train` with policy random (two seeds) -> `pretrainlab mixing-policy` -> `pretrainlab train`
    with the fitted linear policy: its weights change and are logged."""
    runs = []
    for seed in (0, 1):
        cfg = _cfg(tmp_path, data, f"explore{seed}", policy="random").model_dump()
        cfg["seed"] = seed
        path = tmp_path / f"explore{seed}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["train", str(path)]) == 0
        runs.append(str(tmp_path / f"explore{seed}"))
    assert main(["mixing-policy", *runs, "--out", str(tmp_path / "policy.json")]) == 0
    assert "from 6 transitions of 2 run(s)" in capsys.readouterr().out
    cfg = _cfg(tmp_path, data, "deploy", policy="linear", policy_path=str(tmp_path / "policy.json")).model_dump()
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    lines = _train_lines(tmp_path / "deploy")
    seen = {tuple(_weights(r)) for r in lines}
    assert len(seen) == 4  # the prior, then one mixture per re-weighting (steps 3, 6, 9)
    assert all(math.isclose(sum(w), 1.0, rel_tol=1e-12) for w in seen)
    assert main(["mixing-policy", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")]) == 2


def test_a_domain_the_prior_never_draws_is_logged_unmeasured(data: Path, tmp_path: Path) -> None:
    """Its loss is not measured: the log says None, not the neutral 1.0 the policy's state uses."""
    tree = _cfg(tmp_path, data, "zero", steps=6).model_dump()
    tree["data"]["weights"] = {"a": 1.0, "b": 0.0}
    trainer = Trainer(RunConfig.model_validate(tree))
    trainer.fit()
    lines = _agent_lines(trainer.run_dir)
    assert lines and all(line["mixing_agent"]["val_loss"]["b"] is None for line in lines)
    assert all(math.isfinite(line["mixing_agent"]["val_loss"]["a"]) for line in lines)
