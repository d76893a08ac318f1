"""The document filter registry: config names -> DocumentFilter classes, and building one from its config.

`@register_filter("name")` adds a class; `build_filter(cfg, index)` instantiates it with the config's
options as keyword arguments. Unknown names list the known filters; an unknown or bad option is a
ConfigError naming `filters.<index>.options.<key>`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from pretrainlab.config import FilterConfig
from pretrainlab.data.filters.base import DocumentFilter, FilterOptionError
from pretrainlab.errors import ConfigError
from pretrainlab.registry import Registry

FILTERS: Registry[type[DocumentFilter]] = Registry("document filter")

# Modules whose import registers filters; another module that registers one adds its line here.
_BUILTIN_MODULES: tuple[str, ...] = (
    "pretrainlab.data.filters.quality",
    "pretrainlab.data.filters.toxicity",
    "pretrainlab.data.filters.minhash",
    "pretrainlab.recipes.preselect_filter",
)


def register_filter(name: str) -> Callable[[type[DocumentFilter]], type[DocumentFilter]]:
    """Class decorator: register a DocumentFilter subclass under `name` (also set as its `name`)."""

    def add(cls: type[DocumentFilter]) -> type[DocumentFilter]:
        cls.name = name
        return FILTERS.register(name)(cls)

    return add


def load_builtin_filters() -> None:
    """Import the modules that register the built-in filters (idempotent)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def build_filter(cfg: FilterConfig, index: int) -> DocumentFilter:
    """The filter `cfg` names, constructed with its options; ConfigErrors name `filters.<index>...`."""
    load_builtin_filters()
    field = f"filters.{index}"
    cls = FILTERS.get(cfg.name, field=f"{field}.name")
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    unknown = [k for k in cfg.options if k not in known]
    if unknown and not takes_any:
        raise ConfigError(
            f"{field}.options.{unknown[0]} is not an option of the {cfg.name!r} filter "
            f"(valid: {', '.join(known) or 'none'})",
            hint=f"see `docs/filters.md` or the docstring of the {cfg.name!r} filter",
        )
    try:
        return cls(**cfg.options)
    except FilterOptionError as e:
        raise ConfigError(f"{field}.options.{e.key} {e.message}", hint=f"see the docstring of the {cfg.name!r} filter") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{field}.options: {e}", hint=f"see the docstring of the {cfg.name!r} filter") from None
