"""TokenLoader with mixtures: realised proportions, stage switches, repetition caps, exact resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import make_prepared, random_docs
from pretrainlab.data.loader import TokenLoader
from pretrainlab.data.mixture_schedule import MixtureSchedule
from pretrainlab.data.prepared import PreparedData
from pretrainlab.errors import ConfigError, DataError

SEQ, ROWS = 16, 4
TPB = SEQ * ROWS  # tokens per global batch


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """Three domains; 'small' holds 8 windows of 17 tokens, so its epochs turn over every few batches."""
    rng = np.random.default_rng(3)
    return PreparedData(make_prepared(
        tmp_path_factory.mktemp("mix") / "data",
        train={"big": random_docs(rng, 300), "mid": random_docs(rng, 120, 20, 300), "small": random_docs(rng, 6, 10, 40)},
    ))


def schedule(data: PreparedData, specs: list[dict], steps: int = 40, rows: int = ROWS) -> MixtureSchedule:
    return MixtureSchedule.from_stages(specs, domains=data.domains, steps=steps, tokens_per_batch=rows * SEQ)


def loader(data: PreparedData, rows: int = ROWS, **kw) -> TokenLoader:
    return TokenLoader(data, seq_len=SEQ, global_rows=rows, seed=7, **kw)


def batch_domains(ld: TokenLoader, n: int) -> list[list[str]]:
    return [[ld.domains[d] for d in ld.next_batch().domains.tolist()] for _ in range(n)]


def within_4_sigma(counts: dict[str, int], probs: dict[str, float]) -> None:
    """Each domain's row count is within 4 binomial standard deviations of n * p."""
    n = sum(counts.values())
    for d, p in probs.items():
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(counts.get(d, 0) - n * p) <= 4 * sigma + 1e-9, (d, counts, probs)


def test_realised_proportions_of_each_stage_match_its_weights(mixed: PreparedData) -> None:
    """10k windows per stage; 'small' (8 windows) is repeated ~1000 times, which the mixture ignores."""
    rows = 100
    stage0, stage1 = {"big": 0.6, "mid": 0.3, "small": 0.1}, {"big": 0.2, "mid": 0.5, "small": 0.3}
    ld = loader(mixed, rows=rows, schedule=schedule(
        mixed, [{"weights": stage0, "until_tokens": 100 * rows * SEQ}, {"weights": stage1}], steps=200, rows=rows))
    for probs in (stage0, stage1):
        counts: dict[str, int] = {}
        for _ in range(100):
            for d in ld.next_batch().domains.tolist():
                counts[ld.domains[d]] = counts.get(ld.domains[d], 0) + 1
        assert sum(counts.values()) == 10_000
        within_4_sigma(counts, probs)
    share = ld.mixture_metrics()["domain_share"]
    assert share == pytest.approx({d: (stage0[d] + stage1[d]) / 2 for d in stage0}, abs=0.02)


# 64 tokens per batch, 40 steps: until_fraction 0.35 is token 896 = batch 14; 0.33 is token 845 -> batch 14 too.
@pytest.mark.parametrize("bound, switch", [({"until_tokens": 200}, 4), ({"until_tokens": 256}, 4),
                                           ({"until_tokens": 257}, 5), ({"until_fraction": 0.35}, 14),
                                           ({"until_fraction": 0.33}, 14), ({"until_fraction": 0.5}, 20)])
def test_stage_switch_happens_at_the_first_batch_at_or_after_the_bound(
    mixed: PreparedData, bound: dict, switch: int
) -> None:
    ld = loader(mixed, schedule=schedule(mixed, [{"weights": {"big": 1}, **bound}, {"weights": {"mid": 1}}]))
    seen = batch_domains(ld, 25)
    assert all(ds == ["big"] * ROWS for ds in seen[:switch])
    assert all(ds == ["mid"] * ROWS for ds in seen[switch:])


def test_mixture_metrics_report_the_weights_that_drew_the_latest_batch(mixed: PreparedData) -> None:
    ld = loader(mixed, schedule=schedule(mixed, [{"weights": {"big": 1}, "until_tokens": 2 * TPB},
                                                 {"weights": {"mid": 1, "small": 1}}]))
    assert ld.mixture_metrics()["domain_weights"] == {"big": 1.0, "mid": 0.0, "small": 0.0}
    ld.next_batch(), ld.next_batch()
    assert ld.mixture_metrics()["domain_weights"]["big"] == 1.0  # batch 1 was drawn with stage 0
    assert ld.weights == {"big": 0.0, "mid": 0.5, "small": 0.5}  # batch 2 will be drawn with stage 1
    ld.next_batch()
    metrics = ld.mixture_metrics()
    assert metrics["domain_weights"] == {"big": 0.0, "mid": 0.5, "small": 0.5}
    assert sum(metrics["domain_share"].values()) == pytest.approx(1.0)
    assert metrics["domain_share"]["big"] == pytest.approx(2 / 3)
    assert metrics["domain_epochs"] == ld.epochs_seen()


def test_cap_stops_a_domain_at_the_batch_boundary_after_its_cap_and_renormalises(mixed: PreparedData) -> None:
    per_epoch = loader(mixed).windows_per_epoch()["small"]
    ld = loader(mixed, weights={"big": 1, "mid": 1, "small": 2}, max_epochs={"small": 1.5})
    cap = 1.5 * per_epoch
    capped_from = None
    for b in range(60):
        before = ld.state_dict()["counters"]["small"]
        ds = batch_domains(ld, 1)[0]
        if before >= cap:
            capped_from = b if capped_from is None else capped_from
            assert "small" not in ds
        else:
            assert ld.state_dict()["counters"]["small"] < cap + ROWS  # overshoot < one global batch
    assert capped_from is not None
    assert ld.weights == {"big": 0.5, "mid": 0.5, "small": 0.0}
    assert ld.mixture_metrics()["domain_epochs"]["small"] == pytest.approx(ld.state_dict()["counters"]["small"] / per_epoch)
    assert ld.state_dict()["capped_at"] == {"small": capped_from * TPB}


def test_every_domain_capped_is_one_clear_error(mixed: PreparedData) -> None:
    ld = loader(mixed, weights={"small": 1, "big": 0}, max_epochs=1.0)
    with pytest.raises(DataError, match=r"no data left for batch \d+ .*'small' at token [\d,]+ \(1\.\d+ epochs, cap 1\)")\
            as info:
        batch_domains(ld, 10)
    assert "raise data.max_epochs" in info.value.hint


def _run(ld: TokenLoader, n: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for _ in range(n):
        b = ld.next_batch()
        out.append((b.tokens.flatten().tolist(), b.domains.tolist()))
    return out


def _json_round_trip(state: dict) -> dict:
    return json.loads(json.dumps(state))


@pytest.mark.parametrize("k", [3, 9, 14])
def test_resume_mid_stage_and_mid_cap_is_exact(mixed: PreparedData, k: int) -> None:
    """Stage 0 ends at batch 6, stage 1 at batch 12; 'small' hits its 2-epoch cap inside stage 1."""
    def make() -> TokenLoader:
        return loader(mixed, max_epochs={"small": 2.0}, schedule=schedule(mixed, [
            {"weights": {"big": 1, "small": 1}, "until_tokens": 6 * TPB - 10},
            {"weights": {"small": 3, "mid": 1}, "until_fraction": 0.3},
            {"weights": {"big": 1, "mid": 1, "small": 1}},
        ]))

    straight = _run(make(), 20)
    first = make()
    head = _run(first, k)
    resumed = make()
    resumed.load_state_dict(_json_round_trip(first.state_dict()))
    assert head + _run(resumed, 20 - k) == straight
    assert "capped_at" in first.state_dict()


def test_set_weights_then_resume_is_exact(mixed: PreparedData) -> None:
    def go(ld: TokenLoader, n: int, start: int) -> list:
        out = []
        for b in range(start, start + n):
            if b % 3 == 0:  # an online re-weighting policy: new weights every 3 batches
                ld.set_weights({"big": 1 + b % 5, "mid": 2.5, "small": 0.1 * b})
            out += _run(ld, 1)
        return out

    straight = go(loader(mixed, max_epochs=3), 20, 0)
    first = loader(mixed, max_epochs=3)
    head = go(first, 8, 0)
    resumed = loader(mixed, max_epochs=3)
    resumed.load_state_dict(_json_round_trip(first.state_dict()))
    assert head + go(resumed, 12, 8) == straight


def test_one_stage_schedule_draws_the_same_batches_as_fixed_weights(mixed: PreparedData) -> None:
    weights = {"big": 2, "mid": 1, "small": 1}
    fixed = _run(loader(mixed, weights=weights), 10)
    assert _run(loader(mixed, schedule=schedule(mixed, [{"weights": weights}])), 10) == fixed
    assert _run(loader(mixed, weights=weights, max_epochs=1000), 10) == fixed


def test_set_weights_is_refused_with_stages(mixed: PreparedData) -> None:
    ld = loader(mixed, schedule=schedule(mixed, [{"weights": {"big": 1}}]))
    with pytest.raises(ConfigError, match="data.stages is set.*set_weights"):
        ld.set_weights({"mid": 1})


def test_weights_and_schedule_together_are_refused(mixed: PreparedData) -> None:
    with pytest.raises(ConfigError, match="data.weights or data.stages"):
        loader(mixed, weights={"big": 1}, schedule=schedule(mixed, [{"weights": {"big": 1}}]))


def test_unknown_domain_in_max_epochs_is_refused(mixed: PreparedData) -> None:
    with pytest.raises(ConfigError, match=r"data.max_epochs names unknown domain 'tiny'; the data has: big, mid, small"):
        loader(mixed, max_epochs={"tiny": 2})


def test_stage_weight_on_a_domain_too_small_for_a_row_names_the_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = PreparedData(make_prepared(tmp_path / "d", train={"a": random_docs(rng, 50), "b": [[1, 2, 3]]}))
    with pytest.raises(DataError, match=r"(?s)domain 'b' is too small .*data.stages.1.weights.b=0"):
        loader(data, schedule=schedule(data, [{"weights": {"a": 1}, "until_tokens": TPB}, {"weights": {"b": 1}}]))


def test_states_without_the_new_keys_still_load(mixed: PreparedData) -> None:
    first = loader(mixed, weights={"big": 1, "mid": 1})
    head = _run(first, 3)
    state = first.state_dict()
    del state["schedule"], state["capped_at"]  # a checkpoint written before stages and caps existed
    resumed = loader(mixed)
    resumed.load_state_dict(state)
    straight = _run(loader(mixed, weights={"big": 1, "mid": 1}), 6)
    assert head + _run(resumed, 3) == straight


def test_resume_with_other_stages_is_refused(mixed: PreparedData) -> None:
    first = loader(mixed, schedule=schedule(mixed, [{"weights": {"big": 1}, "until_tokens": TPB}, {"weights": {"mid": 1}}]))
    _run(first, 2)
    for other in (loader(mixed), loader(mixed, schedule=schedule(
            mixed, [{"weights": {"big": 1}, "until_tokens": 2 * TPB}, {"weights": {"mid": 1}}]))):
        with pytest.raises(DataError, match=r"drawn with data.stages with bounds \[64\]") as info:
            other.load_state_dict(first.state_dict())
        assert "train.steps" in info.value.hint
