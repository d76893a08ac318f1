"""Skill-it: the mixture equals the paper's closed form on made-up losses and is a probability vector after
every update; graphs from specs; the linear-approximation estimator recovers a planted chain; in a real run
graph estimation leaves the run bit-identical to one given that graph, and a stopped run resumes exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, random_docs, tiny_run_config, train_run
from pretrainlab.errors import ConfigError
from pretrainlab.recipes.skill_graph import (
    check_graph_spec,
    estimate_graph,
    estimate_graph_by,
    graph_from_spec,
    skill_it_weights,
)
from pretrainlab.recipes.skill_it import GRAPH_FILE
from pretrainlab.train.callbacks import Callback
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
DOMAINS = ["a", "b", "c"]


# ---------------------------------------------------------------------- arithmetic


def test_update_is_the_closed_form_on_made_up_losses() -> None:
    graph = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    history = [[4.0, 5.0, 6.0], [3.0, 4.5, 5.5], [2.5, 4.0, 5.0], [2.0, 3.0, 4.5]]
    eta, window = 0.5, 3
    s = np.array([3.0 + 2.5 + 2.0, 4.5 + 4.0 + 3.0, 5.5 + 5.0 + 4.5])  # the last 3 rounds
    expected = np.exp(eta * graph @ s)
    np.testing.assert_allclose(skill_it_weights(graph, history, eta=eta, window=window), expected / expected.sum(),
                               rtol=1e-12)
    # normalised by the initial losses, and only the target column (the fine-tuning variant)
    p = skill_it_weights(graph, history, eta=eta, window=window, targets=[2], initial=history[0])
    e = np.exp(eta * graph[:, 2] * (s[2] / 6.0))
    np.testing.assert_allclose(p, e / e.sum(), rtol=1e-12)
    # the first round under normalise: exp(eta * A 1), the official code's initial mixture
    first = skill_it_weights(graph, history[:1], eta=eta, window=window, initial=history[0])
    e = np.exp(eta * graph.sum(axis=1))
    np.testing.assert_allclose(first, e / e.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="at least one round"):
        skill_it_weights(graph, [], eta=eta, window=window)


def test_weights_are_always_a_probability_vector() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 7))
        graph = rng.random((k, k)) * rng.integers(0, 2, (k, k))
        history = (rng.random((int(rng.integers(1, 6)), k)) * 50).tolist()  # large losses: no overflow
        targets = sorted(rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False).tolist())
        p = skill_it_weights(graph, history, eta=float(rng.random() * 5), window=3, targets=targets)
        assert p.shape == (k,) and (p >= 0).all() and math.isclose(p.sum(), 1.0, rel_tol=1e-12)


def test_graphs_from_specs_and_their_errors() -> None:
    np.testing.assert_array_equal(graph_from_spec("identity", DOMAINS), np.eye(3))
    np.testing.assert_array_equal(graph_from_spec("complete", DOMAINS), np.ones((3, 3)))
    explicit = [[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]]
    np.testing.assert_array_equal(graph_from_spec(explicit, DOMAINS), np.array(explicit, dtype=float))
    mapping = {"a": {"a": 1, "b": 0.5}, "b": {"b": 1, "c": 0.5}, "c": {"c": 1}}
    np.testing.assert_array_equal(graph_from_spec(mapping, DOMAINS), np.array(explicit, dtype=float))
    with pytest.raises(ValueError, match="3 x 3"):
        graph_from_spec([[1, 0], [0, 1]], DOMAINS)
    with pytest.raises(ValueError, match=r"graph.a names unknown domain 'z'"):
        graph_from_spec({"a": {"z": 1}}, DOMAINS)
    with pytest.raises(ValueError, match=r"graph\[0\]\[1\] is -1"):
        check_graph_spec([[1, -1], [0, 1]])
    with pytest.raises(ValueError, match="must be one of identity, complete"):
        check_graph_spec("chain")
    check_graph_spec("estimate")


def test_estimator_recovers_a_planted_chain_from_a_fake_loss_function() -> None:
    """A fake model whose state is a skill level per domain: training on skill i raises the levels by the
    planted chain's row i (i helps itself and its successor i + 1, a little the one after); loss = 3 / (1 + level).
    The estimate's top off-diagonal entry of each row is the chain's edge, whatever the rows' scales."""
    k = 5
    planted = np.eye(k) * 2.0
    for i in range(k - 1):
        planted[i, i + 1] = 1.0
        if i + 2 < k:
            planted[i, i + 2] = 0.3
    planted *= np.linspace(1.0, 0.2, k)[:, None]  # skills learn at different speeds
    level = np.full(k, 0.5)
    start = level.copy()
    domains = [f"s{i}" for i in range(k)]

    def train_on(d: str) -> None:
        level[:] = level + planted[domains.index(d)]

    def reset() -> None:
        level[:] = start

    graph, before, after = estimate_graph_by(domains, measure=lambda: (3 / (1 + level)).tolist(),
                                             train_on=train_on, reset=reset)
    np.testing.assert_array_equal(level, start)
    assert np.allclose(np.diag(graph), 1.0) and graph.max() == 1.0
    for i in range(k - 1):
        off = graph[i].copy()
        off[i] = -1
        assert int(off.argmax()) == i + 1
    assert (graph[k - 1, : k - 1] == 0).all()  # the last skill helps nobody else
    assert np.allclose(graph, estimate_graph(before, after))
    with pytest.raises(ValueError, match="finite"):
        estimate_graph([1.0, 1.0], [[math.nan, 1.0], [1.0, 0.5]])


# ---------------------------------------------------------------------- in a real run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    from pretrainlab.model import peak_flops

    # The CPU peak-FLOP/s probe (model/flops.py) draws from the global torch RNG once per process and thread
    # count, inside the first Trainer: warm it here so every run below starts from the same RNG state.
    peak_flops("cpu", torch.float32)
    rng = np.random.default_rng(0)
    train = {"a": markov_docs(rng, 60, chain=1), "b": markov_docs(rng, 60, chain=2), "c": random_docs(rng, 60)}
    val = {"a": markov_docs(rng, 6, chain=1), "b": markov_docs(rng, 6, chain=2), "c": random_docs(rng, 6)}
    return make_prepared(tmp_path_factory.mktemp("skill") / "prepared", train=train, val=val)


def _cfg(tmp_path: Path, data: Path, name: str, steps: int = 9, **options):
    opts = {"every": 3, "val_tokens": 256, "probe_tokens": 256, "probe_steps": 2, **options}
    return tiny_run_config(tmp_path, data, name=name, train={"steps": steps, "deterministic": True},
                           model={"n_layers": 2, "d_model": 32, "n_heads": 2, "dropout": 0.1},  # draws RNG
                           eval={"every": None, "max_tokens_per_domain": 256},
                           callbacks=[{"name": "skill_it", "options": opts}])


def _train_lines(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if "lr" in r]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint

    return load_checkpoint(find_latest_checkpoint(run))[0]


def test_estimated_graph_leaves_the_run_identical_to_the_explicit_graph(data: Path, tmp_path: Path) -> None:
    est = train_run(_cfg(tmp_path, data, "estimate", graph="estimate", eta=5.0))
    record = json.loads((est / GRAPH_FILE).read_text())
    assert record["source"] == "estimate" and record["domains"] == DOMAINS
    graph = np.array(record["graph"])
    assert graph.shape == (3, 3) and graph.max() == 1.0 and (graph >= 0).all()
    assert len(record["loss_after_probe"]) == 3
    after, before = np.diag(record["loss_after_probe"]), record["loss_before"]
    assert after[0] < before[0] and after[1] < before[1]  # the probes trained (c is random bytes: nothing to learn)
    explicit = train_run(_cfg(tmp_path, data, "explicit", graph=record["graph"], eta=5.0))
    a, b = _train_lines(est), _train_lines(explicit)
    keys = [k for k in a[0] if k not in ("tokens_per_s", "mfu")]
    assert [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]  # bitwise
    wa, wb = _final_weights(est), _final_weights(explicit)
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    # weights: a probability vector after every update, and they moved
    rounds = {r["skill_it/round"]: [r[f"skill_it/weight/{d}"] for d in DOMAINS] for r in a}
    assert sorted(rounds) == [1, 2, 3]
    assert all(min(p) >= 0 and math.isclose(sum(p), 1.0, rel_tol=1e-12) for p in rounds.values())
    assert rounds[1] != rounds[3]


class _StopAt(Callback):
    name = "test_stop"

    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, metrics):
        if trainer.step == self.at:
            trainer.request_stop("test")


@pytest.mark.parametrize("stop_at", [4, 6])  # mid-round, and at a round boundary
def test_stop_and_resume_mid_run_is_exact(data: Path, tmp_path: Path, stop_at: int) -> None:
    graph = {"a": {"a": 1.0, "b": 0.5}, "b": {"b": 1.0}, "c": {"c": 1.0, "a": 0.5}}
    opts = {"graph": graph, "target": ["a", "b"], "normalise": True, "eta": 3.0}
    whole = train_run(_cfg(tmp_path, data, "whole", **opts))
    first = Trainer(_cfg(tmp_path, data, "split", **opts))
    first.callbacks.append(_StopAt(stop_at))
    first.fit()
    Trainer(_cfg(tmp_path, data, "split", **opts), resume=True).fit()
    a, b = _train_lines(whole), _train_lines(tmp_path / "split")
    keys = [k for k in a[0] if k not in ("tokens_per_s", "mfu")]
    assert any(k.startswith("skill_it/val_loss/") for k in keys)
    assert [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]
    wa, wb = _final_weights(whole), _final_weights(tmp_path / "split")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def test_bad_options_and_stages_are_config_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"callbacks.0.options.every: every=0"):
        Trainer(_cfg(tmp_path, data, "x", every=0))
    with pytest.raises(ConfigError, match=r"callbacks.0.options.target names unknown domain 'z'"):
        Trainer(_cfg(tmp_path, data, "y", target="z")).fit()
    with pytest.raises(ConfigError, match=r"must be a 3 x 3 list"):
        Trainer(_cfg(tmp_path, data, "z", graph=[[1.0]])).fit()
    cfg = _cfg(tmp_path, data, "s").model_dump()
    cfg["data"]["stages"] = [{"weights": {"a": 1.0}, "until_tokens": 512}, {"weights": {"b": 1.0}}]
    from pretrainlab.config import RunConfig

    with pytest.raises(ConfigError, match="data.stages .* skill_it"):
        Trainer(RunConfig.model_validate(cfg)).fit()


def test_allowed_skills_get_the_whole_mixture() -> None:
    graph = np.eye(3)
    history = [[5.0, 1.0, 2.0]]
    p = skill_it_weights(graph, history, eta=50.0, window=1, allowed=[False, True, True])
    assert p[0] == 0.0 and abs(p.sum() - 1.0) < 1e-12 and np.all(np.isfinite(p))  # the largest logit not allowed
    with pytest.raises(ValueError, match="at least one"):
        skill_it_weights(graph, history, eta=1.0, window=1, allowed=[False] * 3)


def test_a_validation_only_target_is_measured_never_drawn_nor_probed(tmp_path: Path) -> None:
    """The fine-tuning setting with a held-out target (e.g. a CLIMB-clustered folder's `<target>` domain: 0
    training tokens): Skill-it samples the other domains by their edges into the target; it used to hand the
    loader a positive weight for the target and stop with 'too small for one row'."""
    rng = np.random.default_rng(1)
    train = {"a": markov_docs(rng, 40, chain=1), "b": random_docs(rng, 40), "t": []}
    val = {"a": markov_docs(rng, 6, chain=1), "b": random_docs(rng, 6), "t": markov_docs(rng, 6, chain=1)}
    data = make_prepared(tmp_path / "heldout", train=train, val=val)
    run = train_run(tiny_run_config(tmp_path, data, name="heldout", train={"steps": 6},
                                    model={"n_layers": 1, "d_model": 32, "n_heads": 2},
                                    eval={"every": None, "max_tokens_per_domain": 256},
                                    callbacks=[{"name": "skill_it", "options": {
                                        "every": 3, "val_tokens": 256, "target": "t", "graph": "estimate",
                                        "probe_steps": 1, "probe_tokens": 256}}]))
    record = json.loads((run / GRAPH_FILE).read_text())
    assert record["graph"][2] == [0.0, 0.0, 0.0]  # t was not probed
    lines = _train_lines(run)
    assert lines and all(line["skill_it/weight/t"] == 0.0 for line in lines)
    assert all(abs(line["skill_it/weight/a"] + line["skill_it/weight/b"] - 1.0) < 1e-9 for line in lines)
    assert all(math.isfinite(line["skill_it/val_loss/t"]) for line in lines)


def test_two_re_weighting_callbacks_are_refused(data: Path, tmp_path: Path) -> None:
    """skill_it and mixing_agent would overwrite each other's weights every round: a ConfigError at the start."""
    cfg = _cfg(tmp_path, data, "both").model_dump()
    cfg["callbacks"].append({"name": "mixing_agent", "options": {"every": 3, "val_tokens": 256}})
    from pretrainlab.config import RunConfig

    with pytest.raises(ConfigError, match="callbacks skill_it, mixing_agent all re-weight the data mixture"):
        Trainer(RunConfig.model_validate(cfg)).fit()
