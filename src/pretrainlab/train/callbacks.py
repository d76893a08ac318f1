"""The callback interface and registry: how recipes and safety checks hook into the training loop.

A recipe never edits the loop. It registers a `Callback` subclass under a name and lists it in the
config (`callbacks: [{name: ..., options: {...}}]`); the options become constructor keyword
arguments. Hooks, in the order the trainer calls them each step:

    on_train_start(trainer)                      once, after everything is built (and restored)
    on_step_start(trainer)                       before the step's batch is drawn
    on_before_optimizer_step(trainer, info)      gradients are ready; return False to skip the update
    on_step_end(trainer, metrics)                may add keys to the step's metrics line
    on_eval(trainer, metrics)                    after each evaluation
    on_checkpoint_save(trainer)                  just before a checkpoint's state is gathered
    on_train_end(trainer)                        once, also when training stops early or fails

`state_dict()` / `load_state_dict()` are saved in checkpoints under the callback's `name`, so
a resumed run continues with the same callback state. `trainer.request_stop(reason)` ends training
cleanly after the current step.

The `stability` and `sigterm` callbacks are on by default: they are added when the config does not
list them; list one with `options: {enabled: false}` to turn it off. `task_eval` (downstream tasks at
every evaluation, eval/tasks/callback.py) is added the same way when the config names tasks
(`tasks.tasks`); see `default_callbacks`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pretrainlab.config import CallbackConfig, RunConfig
from pretrainlab.errors import ConfigError
from pretrainlab.registry import Registry

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

DEFAULT_CALLBACKS: tuple[str, ...] = ("stability", "sigterm")


@dataclass
class StepInfo:
    """What `on_before_optimizer_step` sees: the step about to be applied (0-based `step`)."""

    step: int
    loss: float
    grad_norm: float
    lr: float
    tokens: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


class Callback:
    """Base class: every hook does nothing, so a callback overrides only what it needs."""

    name: str = "callback"

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_start(self, trainer: Trainer) -> None:
        pass

    def on_before_optimizer_step(self, trainer: Trainer, info: StepInfo) -> bool:
        return True

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def on_checkpoint_save(self, trainer: Trainer) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


CALLBACKS: Registry[type[Callback]] = Registry("callback")


def check_one_mixture_owner(trainer: Trainer) -> None:
    """ConfigError when more than one callback re-weights the data mixture online (class attribute
    `owns_mixture = True`, e.g. skill_it and mixing_agent): each would overwrite the other's weights through
    `trainer.loader.set_weights`. Such callbacks call this at on_train_start."""
    owners = [cb.name for cb in trainer.callbacks if getattr(cb, "owns_mixture", False)]
    if len(owners) > 1:
        raise ConfigError(f"callbacks {', '.join(owners)} all re-weight the data mixture (loader.set_weights): each "
                          "would overwrite the others' weights", hint="keep one re-weighting callback")


def register_callback(name: str) -> Callable[[type[Callback]], type[Callback]]:
    """Class decorator: make a callback available as `callbacks: [{name: <name>}]`."""

    def deco(cls: type[Callback]) -> type[Callback]:
        cls.name = name  # its checkpoint state is saved under this name
        return CALLBACKS.register(name)(cls)

    return deco


def _load_builtins() -> None:
    from pretrainlab.eval.tasks import callback  # noqa: F401  (registers "task_eval")
    from pretrainlab.model import decoder  # noqa: F401  (the linears and theirs: "ordered_dropout", "masked_linear")
    from pretrainlab.recipes import journey  # noqa: F401  (registers "gradual_pruning")
    from pretrainlab.recipes import low_rank_tricks  # noqa: F401  (registers "refactorize", "momentum_reset")
    from pretrainlab.recipes import skill_it  # noqa: F401  (registers "skill_it")
    from pretrainlab.recipes import mixing_agent  # noqa: F401  (registers "mixing_agent")
    from pretrainlab.recipes import procedural_warmup  # noqa: F401  (registers "reinit_embeddings")
    from pretrainlab.train import signals, stability  # noqa: F401  (register "sigterm", "stability")


def default_callbacks(cfg: RunConfig) -> tuple[str, ...]:
    """The callbacks a run gets without listing them: DEFAULT_CALLBACKS, plus `task_eval` when it names tasks,
    plus those its linear parameterisation needs (see `linear_callbacks`)."""
    return DEFAULT_CALLBACKS + (("task_eval",) if cfg.tasks.tasks else ()) + linear_callbacks(cfg)


def linear_callbacks(cfg: RunConfig) -> tuple[str, ...]:
    """The callbacks `model.linear` needs: its LINEARS entry's `callbacks(options)` when it has one (which also
    checks the options' names and types before anything is built), e.g. `masked_linear`, `ordered_dropout`."""
    from pretrainlab.model.registries import LINEARS

    _load_builtins()
    needs = getattr(LINEARS.get(cfg.model.linear, field="model.linear"), "callbacks", None)
    return tuple(needs(dict(cfg.model.linear_options))) if callable(needs) else ()


def build_callbacks(configs: list[CallbackConfig], *, defaults: tuple[str, ...] = DEFAULT_CALLBACKS) -> list[Callback]:
    """Instantiate the configured callbacks in order, then the defaults the config does not mention.

    Unknown names and bad options are ConfigErrors naming `callbacks.<i>`; a callback listed twice
    is an error too (its checkpoint state is keyed by name).
    """
    _load_builtins()
    out: list[Callback] = []
    seen: set[str] = set()
    for i, c in enumerate(configs):
        field = f"callbacks.{i}"
        CALLBACKS.get(c.name, field=f"{field}.name")
        if c.name in seen:
            raise ConfigError(f"{field}.name: callback {c.name!r} is listed twice", hint="list each callback once")
        seen.add(c.name)
        options = dict(c.options)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{field}.options.enabled must be true or false (got {enabled!r})")
        if enabled:
            out.append(_instantiate(c.name, options, field))
    for name in defaults:
        if name not in seen:
            out.append(_instantiate(name, {}, f"default callback {name!r}"))
    return out


def _instantiate(name: str, options: dict[str, Any], field: str) -> Callback:
    cls = CALLBACKS.get(name)
    unknown, known = _unknown_options(cls, options)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise ConfigError(
            f"{field}.options.{unknown[0]}: the {name!r} callback has no option {unknown[0]!r}"
            + (f" (did you mean {close[0]!r}?)" if close else ""),
            hint=f"its options: {', '.join(known) or 'none'}",
        )
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"{field}.options: {e}", hint=f"see the docstring of the {name!r} callback") from None
    except ValueError as e:
        # a constructor's "key=value must be ..." names the option: point the field at it
        named = re.match(r"(\w+)=", str(e))
        where = f"{field}.options.{named.group(1)}" if named and named.group(1) in options else f"{field}.options"
        raise ConfigError(f"{where}: {e}") from None


def _unknown_options(cls: type[Callback], options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Option names the constructor does not take, and the names it does (none unknown if it takes **kwargs)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return [], []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return [], []
    known = [p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return [k for k in options if k not in known], known
