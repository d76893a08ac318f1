"""The procedural generator registry: names -> Generator classes, options validated, documents by index.

A generator is a pure function of (seed, document index): document i of a source is drawn from its own
random stream, `numpy.random.default_rng([seed, i])`, so any slice of a corpus can be regenerated alone
(documents 10,000-10,099 without the first 10,000) and generation splits across workers with identical
results. Options are a pydantic model per generator (`Generator.Options`): an unknown or bad option is a
ConfigError naming `sources.<i>.options.<key>`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import ValidationError

from pretrainlab.config import StrictModel
from pretrainlab.errors import ConfigError
from pretrainlab.registry import Registry

# Modules whose import registers generators.
_BUILTIN_MODULES = (
    "pretrainlab.data.procedural.dyck",
    "pretrainlab.data.procedural.sequences",
    "pretrainlab.data.procedural.arithmetic",
    "pretrainlab.data.procedural.formal",
    "pretrainlab.data.procedural.haystack",
)


class NoOptions(StrictModel):
    """A generator without options."""


class Generator:
    """One kind of procedural document. Subclasses set `Options` and implement `sample(rng)`; `setup` may
    derive state shared by every document from the seed (e.g. one random automaton per corpus)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[StrictModel]] = NoOptions

    def __init__(self, options: StrictModel, seed: int) -> None:
        self.options = options
        self.seed = int(seed)
        self.setup()

    def setup(self) -> None:
        """Derive what every document shares from `self.options` and `self.seed` (default: nothing)."""

    def sample(self, rng: np.random.Generator) -> str:
        raise NotImplementedError

    def document(self, index: int) -> str:
        """Document `index`: a pure function of (seed, index)."""
        return self.sample(document_rng(self.seed, index))

    def documents(self, start: int, stop: int) -> Iterator[str]:
        """Documents start..stop-1 (any slice: each depends on its own index only)."""
        for i in range(start, stop):
            yield self.document(i)


GENERATORS: Registry[type[Generator]] = Registry("procedural generator")


def register_generator(name: str) -> Callable[[type[Generator]], type[Generator]]:
    """Class decorator: register a Generator subclass under `name` (also set as its `name`)."""

    def add(cls: type[Generator]) -> type[Generator]:
        cls.name = name
        return GENERATORS.register(name)(cls)

    return add


def load_builtin_generators() -> None:
    """Import the modules that register the built-in generators (idempotent)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def document_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of document `index` of a corpus seeded `seed` (independent of every other index)."""
    return np.random.default_rng([int(seed), int(index)])


def parse_options(model: type[StrictModel], options: Mapping[str, Any], where: str) -> Any:
    """`options` validated into `model`; a ConfigError naming `<where>.<key>` for each problem."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"]) or "(options)"
            if err["type"] == "extra_forbidden":
                valid = ", ".join(model.model_fields) or "none"
                problems.append(f"{where}.{key} is not an option (valid: {valid})")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{where}.{key}: {msg} (got {err.get('input')!r})")
        raise ConfigError("; ".join(problems), hint="see docs/procedural.md for each generator's options") from None


def build_generator(name: str, options: Mapping[str, Any], seed: int, *, where: str = "options") -> Generator:
    """The generator `name` with its options validated (errors name `<where>.<key>`), seeded `seed`.

    `where` is the options' place in the config, e.g. `sources.2.options`; the generator's name is
    looked up as `<where without .options>.generator`.
    """
    load_builtin_generators()
    field = where.removesuffix(".options") + ".generator" if where.endswith(".options") else "generator"
    cls = GENERATORS.get(name, field=field)
    return cls(parse_options(cls.Options, options, where), seed)
