"""LR schedules: warm-up then the decay shape, as pure functions of the step."""

from __future__ import annotations

import math

import pytest

from pretrainlab.config import ScheduleConfig
from pretrainlab.errors import ConfigError
from pretrainlab.optim import SCHEDULES, build_schedule, register_schedule


def curve(steps: int = 100, **kw: object) -> list[float]:
    f = build_schedule(ScheduleConfig(**kw), steps)
    return [f(s) for s in range(steps)]


def test_warmup_is_linear_and_reaches_one() -> None:
    c = curve(name="constant", warmup_steps=10)
    assert c[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert c[10:] == [1.0] * 90


def test_cosine_decays_monotonically_to_min_ratio() -> None:
    c = curve(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert c[10] == pytest.approx(1.0)
    assert c[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(c[10:], c[11:]))
    mid = 10 + (99 - 10) // 2
    assert c[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - 10) / 89)))


def test_linear_decay_has_constant_slope() -> None:
    c = curve(name="linear", warmup_steps=0, min_lr_ratio=0.0)
    diffs = [a - b for a, b in zip(c, c[1:])]
    assert c[0] == pytest.approx(1.0) and c[-1] == pytest.approx(0.0)
    assert max(diffs) == pytest.approx(min(diffs))


def test_wsd_is_flat_then_decays_over_the_last_fraction() -> None:
    c = curve(name="wsd", warmup_steps=5, decay_fraction=0.2, min_lr_ratio=0.0)
    flat = [v for v in c[5:] if v == 1.0]
    assert len(flat) >= 70  # stable phase: 80% of the post-warm-up steps
    assert c[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(c[5:], c[6:]))


def test_warmup_fraction_used_when_steps_not_given() -> None:
    c = curve(name="constant", warmup_fraction=0.1)
    assert c[9] == pytest.approx(1.0) and c[8] < 1.0


def test_unknown_schedule_and_long_warmup_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="schedule.name.*'cosine'"):
        build_schedule(ScheduleConfig(name="cosin"), 10)
    with pytest.raises(ConfigError, match="schedule.warmup_steps"):
        build_schedule(ScheduleConfig(warmup_steps=20), 10)


def test_registered_shape_is_usable() -> None:
    if "half" not in SCHEDULES:
        register_schedule("half")(lambda progress, cfg: 0.5)
    assert curve(10, name="half", warmup_steps=0) == [0.5] * 10
