"""The tracker interface and registry: sinks that receive every line metrics.jsonl gets.

metrics.jsonl is always written; a tracker is an extra, optional sink for the same records (train
lines, evaluation lines, the end line) on the main process. A tracker class registers a name
(`@register_tracker("mine")`) and is chosen in the run config: `trackers: [{name: mine, options: {...}}]`;
the options become keyword arguments of its constructor.

The tracker set (tracker_set.py) calls, in order:

    Tracker(ctx, **options)           start (may raise: the set warns once and goes on without it)
    log_metrics(metrics, step)        every train and evaluation line: numeric values only, nested
                                      dicts flattened with "/" (`domain_weights/code`)
    log_summary(summary, step)        the end line (wall time, totals, final metrics)
    close(status)                     once, "finished" | "failed" | "stopped"

Any exception a tracker raises drops that tracker with one warning; training never stops for one.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pretrainlab.registry import Registry

Status = Literal["finished", "failed", "stopped"]


@dataclass(frozen=True)
class TrackerContext:
    """What a tracker may need to start.

    `config` is the resolved run config (as written to config.yaml). `resume` is true for `--resume`:
    `start_step` is then the restored checkpoint's step (the next record has a larger one), and `state`
    is what this tracker saved in `<run>/trackers.json` last session (e.g. its backend's run id); it is
    empty for a fresh run.
    """

    run_dir: Path
    run_name: str
    config: dict[str, Any]
    resume: bool = False
    start_step: int = 0
    state: dict[str, Any] = field(default_factory=dict)


class Tracker:
    """Base class. Subclasses set `extra` (the pip extra that installs their backend), start in
    `__init__(ctx, **options)`, and put what a resumed session needs in `self.state` (JSON-able)."""

    name: ClassVar[str] = "tracker"
    extra: ClassVar[str | None] = None

    def __init__(self, ctx: TrackerContext, **options: Any) -> None:
        self.ctx = ctx
        self.state: dict[str, Any] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_summary(self, summary: dict[str, float], step: int) -> None:
        """The end line; by default logged as metrics `final/<key>` at the last step."""
        self.log_metrics({f"final/{k}": v for k, v in summary.items()}, step)

    def close(self, status: Status) -> None:
        pass


TRACKERS: Registry[type[Tracker]] = Registry("experiment tracker")


def register_tracker(name: str) -> Callable[[type[Tracker]], type[Tracker]]:
    """Class decorator: make a tracker available as `trackers: [{name: <name>}]`."""

    def deco(cls: type[Tracker]) -> type[Tracker]:
        cls.name = name
        return TRACKERS.register(name)(cls)

    return deco


def numeric_items(record: dict[str, Any], *, skip: tuple[str, ...] = ("step", "event")) -> dict[str, float]:
    """The numeric values of a metrics record as floats (NaN and infinities kept: a diverging loss is worth
    seeing). Strings, None, booleans (flags such as `skipped`) and lists are left out; nested dicts are
    flattened with "/" (`{"domain_weights": {"code": 0.5}}` -> `domain_weights/code`)."""
    return dict(_numeric(record, "", skip))


def _numeric(record: dict[str, Any], prefix: str, skip: tuple[str, ...]) -> Iterator[tuple[str, float]]:
    for key, value in record.items():
        if not prefix and key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric(value, f"{name}/", skip)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield name, float(value)


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"d_model": 32}}` -> `{"model.d_model": 32}` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = value
    return out


