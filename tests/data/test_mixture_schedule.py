"""MixtureSchedule and repetition caps as pure functions: bounds, stage lookup, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.config import MixtureStage
from pretrainlab.data.mixture_caps import epoch_caps, without_capped
from pretrainlab.data.mixture_schedule import MixtureSchedule, resolve_bounds, switch_batch
from pretrainlab.errors import ConfigError, DataError

DOMAINS = ["code", "prose", "math"]


def stages(*specs: dict) -> list[MixtureStage]:
    return [MixtureStage.model_validate(s) for s in specs]


def test_bounds_from_tokens_and_fractions_and_stage_lookup() -> None:
    schedule = MixtureSchedule.from_stages(
        stages({"weights": {"code": 1}, "until_tokens": 200},
               {"weights": {"code": 1, "prose": 3}, "until_fraction": 0.5},
               {"weights": {"math": 2}}),
        domains=DOMAINS, steps=10, tokens_per_batch=64,
    )
    assert schedule.bounds == (200, 320)  # 0.5 x 10 steps x 64 tokens
    assert schedule.n_stages == 3
    # A batch whose first token index is >= a bound is the first drawn with the next stage.
    assert [schedule.stage_at(b * 64) for b in range(10)] == [0, 0, 0, 0, 1, 2, 2, 2, 2, 2]
    assert switch_batch(200, 64) == 4 and switch_batch(320, 64) == 5
    np.testing.assert_array_equal(schedule.weights_at(199), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(schedule.weights_at(200), [0.25, 0.75, 0.0])
    np.testing.assert_array_equal(schedule.weights_at(10**9), [0.0, 0.0, 1.0])
    assert schedule.describe() == {"bounds": [200, 320], "weights": [{"code": 1.0}, {"code": 0.25, "prose": 0.75},
                                                                      {"math": 1.0}]}


def test_fraction_is_rounded_to_the_nearest_token() -> None:
    # 0.3 x 10 x 256 is 768.0000000000001 in floating point; the bound is token 768, i.e. batch 3.
    assert resolve_bounds(stages({"weights": {"code": 1}, "until_fraction": 0.3}, {"weights": {"prose": 1}}),
                          steps=10, tokens_per_batch=256) == [768]


@pytest.mark.parametrize(
    "specs, field, message",
    [
        (({"weights": {"code": 1}, "until_tokens": 300}, {"weights": {"code": 1}, "until_tokens": 300},
          {"weights": {"code": 1}}), "data.stages.1.until_tokens=300", "not after stage 0's end"),
        (({"weights": {"code": 1}, "until_fraction": 0.5}, {"weights": {"code": 1}, "until_tokens": 100},
          {"weights": {"code": 1}}), "data.stages.1.until_tokens=100", "not after stage 0's end"),
        (({"weights": {"code": 1}, "until_tokens": 640}, {"weights": {"code": 1}}),
         "data.stages.0.until_tokens=640", "at or after the run's end"),
        (({"weights": {"code": 1}, "until_tokens": 600}, {"weights": {"code": 1}}),
         "data.stages.0.until_tokens=600", "leaves stage 1 no batch"),
        (({"weights": {"code": 1}, "until_tokens": 100}, {"weights": {"code": 1}, "until_tokens": 120},
          {"weights": {"code": 1}}), "data.stages.1.until_tokens=120", "leaves stage 1 no batch"),
    ],
)
def test_bad_bounds_name_the_field(specs: tuple, field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MixtureSchedule.from_stages(stages(*specs), domains=DOMAINS, steps=10, tokens_per_batch=64)
    assert field in str(info.value)


def test_unknown_domain_in_a_stage_names_the_stage() -> None:
    with pytest.raises(DataError, match=r"data.stages.1.weights names unknown domain 'poetry'; the data has: code"):
        MixtureSchedule.from_stages(stages({"weights": {"code": 1}, "until_tokens": 64}, {"weights": {"poetry": 1}}),
                                    domains=DOMAINS, steps=10, tokens_per_batch=64)


def test_stages_given_as_plain_mappings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"data.stages.0: .*until_tokens or until_fraction, not both"):
        MixtureSchedule.from_stages([{"weights": {"code": 1}, "until_tokens": 64, "until_fraction": 0.5},
                                     {"weights": {"code": 1}}], domains=DOMAINS, steps=10, tokens_per_batch=64)


def test_epoch_caps() -> None:
    assert epoch_caps(None, DOMAINS) is None
    np.testing.assert_array_equal(epoch_caps(2, DOMAINS), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(epoch_caps({"math": 0.5}, DOMAINS), [np.inf, np.inf, 0.5])
    with pytest.raises(ConfigError, match=r"data.max_epochs names unknown domain 'poetry'"):
        epoch_caps({"poetry": 1.0}, DOMAINS)
    with pytest.raises(ConfigError, match=r"data.max_epochs.code is 0"):
        epoch_caps({"code": 0}, DOMAINS)


def test_without_capped_renormalises_and_keeps_uncapped_vectors_identical() -> None:
    probs = np.array([0.5, 0.3, 0.2])
    assert without_capped(probs, np.array([False, False, False])) is probs
    assert without_capped(np.array([0.5, 0.5, 0.0]), np.array([False, False, True])) is not None
    np.testing.assert_allclose(without_capped(probs, np.array([True, False, False])), [0.0, 0.6, 0.4])
    assert without_capped(np.array([0.0, 1.0, 0.0]), np.array([False, True, False])) is None
