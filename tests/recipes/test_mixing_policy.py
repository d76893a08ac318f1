"""Mixing policies on made-up loss histories: the heuristic's ordering, probability vectors always, the linear
policy's fit recovering a known best action, and its policy file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.errors import DataError
from pretrainlab.recipes.mixing_agent import balanced_base, balanced_loss, finalise
from pretrainlab.recipes.mixing_linear import (
    LinearPolicy,
    LinearPolicyParams,
    Transition,
    fit_linear_policy,
    load_linear_policy,
    save_linear_policy,
)
from pretrainlab.recipes.mixing_policy import HeuristicPolicy, Observation, RandomPolicy, features, progress_slope


def _obs(rel_rows: list[list[float]], base: list[float] | None = None, **kw) -> Observation:
    rel = np.asarray(rel_rows, dtype=np.float64)
    k = rel.shape[1]
    base_v = np.full(k, 1.0 / k) if base is None else np.asarray(base, dtype=np.float64)
    return Observation(domains=[f"d{i}" for i in range(k)], losses=5.0 * rel, tokens=np.arange(len(rel)) * 1000,
                       weights=base_v.copy(), base=base_v, **kw)


def test_slope_is_least_squares_over_the_window() -> None:
    rel = np.asarray([[1.0], [0.5], [0.4], [0.3]])
    tokens = np.asarray([0, 10, 20, 30])
    assert progress_slope(rel, tokens, window=2)[0] == pytest.approx(-0.01)  # the last 3 points only
    assert progress_slope(rel[:1], tokens[:1], window=3)[0] == 0.0


def test_heuristic_favours_a_domain_still_moving_over_plateaued_and_unlearnable_ones() -> None:
    # columns: steady learner, plateaued, unlearnable noise, being forgotten
    obs = _obs([[1.0, 1.0, 1.0, 1.0], [0.9, 0.7, 1.0, 0.7], [0.8, 0.7, 1.0, 0.75], [0.7, 0.7, 1.0, 0.8]])
    policy = HeuristicPolicy(temperature=0.1, window=2)
    scores = policy.scores(obs)
    assert scores[1] == pytest.approx(0.0, abs=1e-12) and scores[2] == 0.0
    assert scores[0] == pytest.approx(0.1 / 1000 * 3000 * 0.7)  # |slope| x tokens so far x relative loss
    p = policy.propose(obs)
    assert p.sum() == pytest.approx(1.0) and p[0] > p[1] and p[3] > p[1] and p[1] == pytest.approx(p[2])
    flatter = HeuristicPolicy(temperature=10.0, window=2).propose(obs)
    assert flatter.max() - flatter.min() < p.max() - p.min()


def test_every_policy_gives_zero_to_a_domain_the_prior_never_draws() -> None:
    obs = _obs([[1.0, 1.0, 1.0], [0.5, 0.9, 0.8]], base=[0.5, 0.0, 0.5])
    params = LinearPolicyParams(domains=obs.domains, W=np.ones((3, 9)), b=np.asarray([0.0, 9.0, 0.0]))
    for policy in (HeuristicPolicy(), RandomPolicy(), LinearPolicy(params)):
        p = policy.propose(obs)
        assert p[1] == 0.0 and p.sum() == pytest.approx(1.0) and (p >= 0).all()


def test_random_policy_is_keyed_by_seed_and_update_only() -> None:
    obs = _obs([[1.0, 1.0]], update=3, seed=7)
    same = _obs([[1.0, 1.0], [0.5, 0.2]], update=3, seed=7)
    assert np.array_equal(RandomPolicy().propose(obs), RandomPolicy().propose(same))
    assert not np.array_equal(RandomPolicy().propose(obs), RandomPolicy().propose(_obs([[1.0, 1.0]], update=4)))


def test_finalise_mixes_toward_the_base_and_refuses_bad_vectors() -> None:
    base = np.asarray([0.25, 0.25, 0.5, 0.0])
    out = finalise(np.asarray([1.0, 0.0, 0.0, 0.0]), base, floor=0.2)
    assert out == pytest.approx([0.8 + 0.05, 0.05, 0.1, 0.0]) and out.sum() == pytest.approx(1.0)
    assert finalise(np.asarray([0.0, 0.0, 0.0, 1.0]), base, floor=0.1) is None  # only on a domain never drawn
    for bad in ([np.nan, 1, 1, 0], [np.inf, 1, 1, 0], [-1.0, 1, 1, 0], [0.0, 0, 0, 0], [1.0, 1.0]):
        assert finalise(np.asarray(bad, dtype=np.float64), base, floor=0.1) is None
    rng = np.random.default_rng(0)
    for _ in range(200):  # whatever a policy proposes, the result is a probability vector or None
        p = rng.choice([0.0, 1e-300, 1.0, 1e300, np.inf, np.nan, -1.0], size=4) * rng.random(4)
        out = finalise(p, base, floor=float(rng.random()))
        assert out is None or (np.isfinite(out).all() and (out >= 0).all() and out.sum() == pytest.approx(1.0)
                               and out[3] == 0.0)


def test_extreme_losses_never_reach_the_loader_as_a_bad_vector() -> None:
    for rows in ([[1e-300, 1.0], [1e300, 1.0]], [[1.0, 1.0], [1e-320, 1.0]], [[1.0, 2.0], [1.0, 2.0]]):
        with np.errstate(all="ignore"):
            p = HeuristicPolicy(temperature=1e-6).propose(_obs(rows))
        out = finalise(p, np.asarray([0.5, 0.5]), 0.1)
        assert out is None or (np.isfinite(out).all() and out.sum() == pytest.approx(1.0))


def test_balanced_base_and_loss_weigh_source_against_target() -> None:
    prior = np.asarray([0.6, 0.3, 0.1])
    target = np.asarray([False, False, True])
    base = balanced_base(prior, target, source_weight=0.75)
    assert base == pytest.approx([0.5, 0.25, 0.25])
    assert balanced_base(prior, None, 0.5) == pytest.approx(prior)
    assert balanced_base(np.asarray([1.0, 0.0, 0.0]), target, 0.5) == pytest.approx([1.0, 0.0, 0.0])
    rel = np.asarray([0.8, 0.6, 0.5])
    assert balanced_loss(rel, target, 0.75) == pytest.approx(0.75 * 0.7 + 0.25 * 0.5)
    assert balanced_loss(rel, None, 0.75) == pytest.approx(rel.mean())


def _synthetic_trajectories(rng: np.random.Generator, best_of, k: int = 3, n_traj: int = 16, steps: int = 8):
    out = []
    for _ in range(n_traj):
        traj = []
        for _ in range(steps):
            state = rng.normal(1.0, 0.5, size=3 * k)
            action = rng.dirichlet(np.ones(k))
            reward = float(action[best_of(state)]) + rng.normal(0.0, 0.05)
            traj.append(Transition(state, action, reward))
        out.append(traj)
    return out


def test_fitted_linear_policy_picks_the_known_best_action() -> None:
    rng = np.random.default_rng(0)
    params = fit_linear_policy(_synthetic_trajectories(rng, lambda s: 2), domains=["a", "b", "c"])
    assert params.domains == ["a", "b", "c"] and params.fit["transitions"] == 128
    assert np.argmax(params.W @ np.ones(9) + params.b) == 2  # at the states' mean
    states = rng.normal(1.0, 0.5, size=(400, 9))
    picks = np.argmax(states @ params.W.T + params.b, axis=1)
    assert (picks == 2).mean() > 0.9  # the noise features move it a little: a linear fit on 128 samples


def test_fitted_linear_policy_learns_a_state_dependent_best_action() -> None:
    rng = np.random.default_rng(1)

    def best(s: np.ndarray) -> int:
        return 0 if s[0] > 1.0 else 1

    params = fit_linear_policy(_synthetic_trajectories(rng, best, n_traj=40))
    states = rng.normal(1.0, 0.5, size=(400, 9))
    clear = np.abs(states[:, 0] - 1.0) > 0.25  # away from the boundary
    picks = np.argmax(states @ params.W.T + params.b, axis=1)
    want = np.where(states[:, 0] > 1.0, 0, 1)
    assert (picks[clear] == want[clear]).mean() > 0.9


def test_fit_refuses_too_few_or_malformed_transitions() -> None:
    t = Transition(np.ones(6), np.asarray([0.5, 0.5]), 0.1)
    with pytest.raises(DataError, match="at least 2 transitions"):
        fit_linear_policy([[t]])
    with pytest.raises(DataError, match="expected 6"):
        fit_linear_policy([[Transition(np.ones(5), np.asarray([0.5, 0.5]), 0.1)] * 2])
    with pytest.raises(DataError, match="finite"):
        fit_linear_policy([[t, Transition(np.ones(6), np.asarray([0.5, 0.5]), float("nan"))]])


def test_policy_file_round_trip_json_and_npz(tmp_path: Path) -> None:
    params = LinearPolicyParams(domains=["a", "b"], W=np.arange(12.0).reshape(2, 6) / 7, b=np.asarray([0.1, -0.2]))
    path = save_linear_policy(params, tmp_path / "p.json")
    back = load_linear_policy(path)
    assert back.domains == ["a", "b"] and np.array_equal(back.W, params.W) and np.array_equal(back.b, params.b)
    np.savez(tmp_path / "p.npz", W=params.W, b=params.b, domains=np.asarray(["a", "b"]))
    assert np.array_equal(load_linear_policy(tmp_path / "p.npz").W, params.W)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**params.to_json(), "W": [[1.0, 2.0]]}))
    with pytest.raises(DataError, match=r"bad.json: W must be 2 x 6"):
        load_linear_policy(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_linear_policy(tmp_path / "missing.json")
    torn = tmp_path / "torn.json"
    torn.write_text("{")
    with pytest.raises(DataError, match="torn.json: not a readable JSON"):
        load_linear_policy(torn)


def test_features_are_relative_losses_their_change_and_the_weights() -> None:
    obs = _obs([[1.0, 1.0], [0.8, 0.9]], base=[0.25, 0.75])
    assert features(obs) == pytest.approx([0.8, 0.9, -0.2, -0.1, 0.25, 0.75])
