"""The sweep file: its validated schema and its expansion into points, one training run each.

A sweep file names a base RunConfig (a YAML path relative to the sweep file, or an inline mapping),
dotted `overrides` applied to every point, and `axes` combined as a cartesian product, first axis
outermost:

  - `grid: {key: [v1, v2], key2: [...]}`       the product of the value lists (first key outermost),
  - `list: [{key: v, key2: w}, {...}]`          points whose values go together,
  - `random: {count, seed, params: {key: {uniform|log_uniform|int_uniform|choice: ...}}}`
                                                seeded draws (the same seed gives the same points),
  - `mixture: {n, alpha, seed, domains, prior, include_uniform}`
                                                n values of `data.weights` drawn from a Dirichlet over the
                                                domains (science/mixture_axis.py; RegMix/CLIMB-style search).

`seeds` repeats every point (a count, starting at the base config's seed, or an explicit list); each
repeat is a separate run with its own `seed`.

Everything is checked here, before any run starts and before anything is written: each axis entry is
validated against the base config, so an error names the axis (`axes[0].grid: unknown key
'optim.wieght_decay'; did you mean 'optim.weight_decay'?`); then every point's full RunConfig gets the
checks `pretrainlab train` makes before it builds a model (batch plan, schedule, optimiser, callbacks,
objective, model sizes against the prepared data's vocabulary).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pretrainlab.config import RunConfig, StrictModel, load_yaml, parse_override, validate
from pretrainlab.errors import ConfigError, PretrainlabError

AXIS_KINDS = ("grid", "list", "random", "mixture")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
RESERVED_KEYS = {
    "name": "each point's name is made by the sweep",
    "out_dir": "points run in the sweep folder's runs/",
    "seed": "seeds are set by the sweep file's `seeds:` (a count or a list)",
}
MAX_NAME_LEN = 96  # longer point names are shortened and made unique with a hash
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


class SweepSpec(StrictModel):
    """Root of a sweep file (`pretrainlab sweep SWEEP.yaml`)."""

    name: str = Field(min_length=1, description="The sweep folder is out_dir/name.")
    out_dir: str = "sweeps"
    base: str | dict[str, Any] = Field(
        description="The base RunConfig: a YAML path (relative to the sweep file) or an inline mapping."
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides applied to every point.")
    axes: list[Any] = Field(default_factory=list, description="grid / list / random axes, combined as a product.")
    seeds: int | list[int] = Field(default=1, description="Repeats per point: a count or a list of seeds.")
    executor: Literal["local", "ray"] = "local"
    jobs: int | None = Field(default=None, ge=1, description="Runs at once (local default 1; ray: all that fit).")
    gpus_per_run: float = Field(default=0.0, ge=0.0, description="Ray: GPUs reserved per run (num_gpus).")

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, v: str) -> str:
        if _SAFE.search(v) or v in (".", ".."):
            raise ValueError("a sweep name is letters, digits, '.', '_', '+' and '-' (it becomes a folder name)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("seeds is a count >= 1 or a non-empty list of seeds")
        if isinstance(v, list):
            if not v:
                raise ValueError("seeds is a non-empty list (or a count >= 1)")
            if len(set(v)) != len(v):
                raise ValueError("seeds lists a seed twice")
        return v


class GridAxis(StrictModel):
    """`grid: {dotted.key: [values]}`: the product of the value lists."""

    grid: dict[str, list[Any]]


class ListAxis(StrictModel):
    """`list: [{dotted.key: value, ...}, ...]`: each mapping is one point's values."""

    list: list[dict[str, Any]]


class RandomParams(StrictModel):
    count: int = Field(ge=1, description="Points drawn.")
    seed: int = 0
    params: dict[str, dict[str, Any]] = Field(description="dotted.key: {distribution: arguments}")


class RandomAxis(StrictModel):
    """`random: {count, seed, params}`: `count` seeded draws of every param's distribution."""

    random: RandomParams


@dataclass(frozen=True)
class Entry:
    """One value set of one axis: where it comes from (`axes[1].list[0]`) and its dotted values."""

    origin: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """One training run of a sweep: its name, seed, swept values, and full validated RunConfig."""

    name: str
    seed: int
    axes: dict[str, Any]  # every swept key of the sweep and the value this point runs with
    overrides: dict[str, Any]  # everything applied to the base: sweep overrides, then axes, then seed
    origin: str  # the axis entries it combines, for error messages
    config: RunConfig

    def to_json(self) -> dict[str, Any]:
        """The points.json entry."""
        return {"name": self.name, "overrides": self.overrides, "seed": self.seed, "axes": self.axes,
                "origin": self.origin}


@dataclass
class Sweep:
    """A resolved sweep: the validated spec, the base config tree, the sweep folder and every point."""

    spec: SweepSpec
    base: dict[str, Any]  # the base RunConfig, fully resolved (every default written out)
    folder: Path
    points: list[Point] = field(default_factory=list)
    source: str = "sweep"


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def resolve_sweep(
    spec_or_path: str | Path | dict[str, Any] | SweepSpec,
    overrides: Sequence[str] = (),
    *,
    check_data: bool = True,
) -> Sweep:
    """Read, override, validate and expand a sweep (a file path, a mapping, or a SweepSpec).

    `overrides` are dotted `key=value` items on the sweep file (`jobs=2`, `overrides.train.steps=50`,
    `axes.0.grid.optim.lr=[1e-3, 3e-3]`, `axes.1.list.0.optim.lr=3e-3`). With `check_data=False` no file
    a point needs is opened: neither the prepared data (the model sizes are then not checked against its
    vocabulary) nor the teacher runs. Raises ConfigError (or DataError for a missing prepared-data folder)
    naming the axis, key or point; nothing is written.
    """
    if isinstance(spec_or_path, SweepSpec):
        tree, base_dir, source = spec_or_path.model_dump(mode="json"), Path.cwd(), "sweep"
    elif isinstance(spec_or_path, dict):
        tree, base_dir, source = copy.deepcopy(spec_or_path), Path.cwd(), "sweep"
    else:
        path = Path(spec_or_path)
        tree, base_dir, source = load_yaml(path), path.parent, str(path)
    tree = apply_sweep_overrides(tree, overrides)
    spec = validate(SweepSpec, tree, source=source)
    base = _load_base(spec, base_dir, source)
    folder = Path(spec.out_dir) / spec.name
    sweep = Sweep(spec=spec, base=validate(RunConfig, base, source=f"{source}: base").model_dump(mode="json"),
                  folder=folder, source=source)
    _check_reserved(spec.overrides, f"{source}: overrides")
    common = _with_values(base, spec.overrides, f"{source}: overrides")
    validate(RunConfig, common, source=f"{source}: base + overrides")
    axes = [_parse_axis(i, raw, common, check_data=check_data) for i, raw in enumerate(spec.axes)]
    _check_disjoint(axes)
    sweep.points = _expand(spec, common, axes, folder)
    check_points(sweep.points, check_data=check_data)
    return sweep


def apply_sweep_overrides(tree: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """Apply dotted `key=value` items to a sweep-file tree.

    Mappings whose keys are themselves dotted config keys (`overrides`, `axes.N.grid`, the entries
    `axes.N.list.M` of a list axis, `axes.N.random.params`) take the rest of the item's key whole:
    `overrides.train.steps=50` sets `overrides["train.steps"]`, `axes.0.list.1.optim.lr=3e-3` sets
    `axes[0]["list"][1]["optim.lr"]`.
    """
    out = copy.deepcopy(tree)
    for item in items:
        path, value = parse_override(item)
        node: Any = out
        for i, part in enumerate(path):
            rest = path[i + 1:]
            if not rest:
                _assign(node, part, value, item)
                break
            if _holds_dotted_keys(path[: i + 1]):
                child = _child(node, part, item, create=True)
                child[".".join(rest)] = value
                break
            node = _child(node, part, item, create=True)
    return out


def _holds_dotted_keys(prefix: list[str]) -> bool:
    if prefix == ["overrides"]:
        return True
    if len(prefix) == 3 and prefix[0] == "axes" and prefix[2] == "grid":
        return True
    if len(prefix) == 4 and prefix[0] == "axes" and prefix[2] == "list":  # one entry of a list axis
        return True
    return len(prefix) == 4 and prefix[0] == "axes" and prefix[2:] == ["random", "params"]


def _child(node: Any, part: str, item: str, *, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {item!r}: {part!r} is inside a value, not a section")
    nxt = node.get(part)
    if nxt is None and create:
        nxt = node[part] = {}
    return nxt


def _assign(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, item)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override {item!r}: {part!r} is inside a value, not a section")


def _index(node: list[Any], part: str, item: str) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"override {item!r}: {part!r} is not an index of a list of {len(node)} items") from None
    if not -len(node) <= idx < len(node):
        raise ConfigError(f"override {item!r}: index {idx} is out of range (the list has {len(node)} items)")
    return idx


def _load_base(spec: SweepSpec, base_dir: Path, source: str) -> dict[str, Any]:
    if isinstance(spec.base, dict):
        return copy.deepcopy(spec.base)
    path = Path(spec.base)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(
            f"{source}: base {spec.base!r}: {path} does not exist",
            hint="base is a RunConfig YAML path relative to the sweep file, or an inline mapping",
        )
    return load_yaml(path)


def set_dotted(tree: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    """Set `a.b.c` in a config tree (list items by index), creating missing sections."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{where}: {key!r} is not a dotted config key", hint="write keys like optim.lr")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, f"{where}: {key}")]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {key}: {'.'.join(parts[:i])} is a value, not a section")
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        node = nxt
    if isinstance(node, list):
        node[_index(node, parts[-1], f"{where}: {key}")] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[parts[-1]] = copy.deepcopy(value)
    else:
        raise ConfigError(f"{where}: {key}: {'.'.join(parts[:-1])} is a value, not a section")


def _with_values(tree: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    for key, value in values.items():
        set_dotted(out, key, value, where=where)
    return out


def _check_reserved(values: dict[str, Any], where: str) -> None:
    for key, value in values.items():
        if key in RESERVED_KEYS:
            raise ConfigError(f"{where}: {key!r} cannot be swept or overridden: {RESERVED_KEYS[key]}")
        if isinstance(value, dict) and _is_section(key):
            first = next(iter(value), "key")
            raise ConfigError(
                f"{where}: {key!r} is a whole config section; a mapping here would replace all of it",
                hint=f"write its keys dotted, e.g. {key}.{first}: ...",
            )


def _is_section(key: str) -> bool:
    """Whether dotted `key` names a nested config model (optim, model.x ...) rather than a value field."""
    import typing

    from pydantic import BaseModel

    cls: Any = RunConfig
    annotation: Any = None
    for part in key.split("."):
        fields = getattr(cls, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        models = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = models[0] if models else None
    return cls is not None


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------


def _parse_axis(i: int, raw: Any, common: dict[str, Any], *, check_data: bool = True) -> list[Entry]:
    """The entries of axis `i`, each validated against the base + overrides (errors name the axis)."""
    where = f"axes[{i}]"
    if not isinstance(raw, dict) or len(raw) != 1:
        keys = list(raw) if isinstance(raw, dict) else None
        close = difflib.get_close_matches(str(keys[0]), AXIS_KINDS, n=1, cutoff=0.5) if keys else []
        raise ConfigError(
            f"{where}: an axis is a mapping with one key, grid, list, random or mixture (got "
            + (f"keys {keys}" if keys is not None else type(raw).__name__) + ")"
            + (f"; did you mean {close[0]!r}?" if close and len(keys or []) == 1 else ""),
            hint="e.g. - grid: {optim.lr: [1e-3, 3e-3]}",
        )
    kind = next(iter(raw))
    if kind == "grid":
        axis = validate(GridAxis, raw, source=where)
        return _grid_entries(where, axis, common)
    if kind == "list":
        axis_l = validate(ListAxis, raw, source=where)
        return _list_entries(where, axis_l, common)
    if kind == "random":
        axis_r = validate(RandomAxis, raw, source=where)
        return _random_entries(where, axis_r.random, common)
    if kind == "mixture":
        return _mixture_entries(where, raw, common, check_data=check_data)
    close = difflib.get_close_matches(str(kind), AXIS_KINDS, n=1, cutoff=0.5)
    raise ConfigError(
        f"{where}: unknown axis kind {kind!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        + " (one of grid, list, random, mixture)"
    )


def _check_entry(where: str, values: dict[str, Any], common: dict[str, Any]) -> None:
    _check_reserved(values, where)
    validate(RunConfig, _with_values(common, values, where), source=where)


def _grid_entries(where: str, axis: GridAxis, common: dict[str, Any]) -> list[Entry]:
    where = f"{where}.grid"
    if not axis.grid:
        raise ConfigError(f"{where} is empty", hint="give at least one key with a list of values")
    for key, values in axis.grid.items():
        if not values:
            raise ConfigError(f"{where}: {key} has an empty list of values", hint="list at least one value")
        for value in values:
            _check_entry(where, {key: value}, common)
    keys = list(axis.grid)
    return [Entry(where, dict(zip(keys, combo))) for combo in itertools.product(*axis.grid.values())]


def _list_entries(where: str, axis: ListAxis, common: dict[str, Any]) -> list[Entry]:
    if not axis.list:
        raise ConfigError(f"{where}.list is empty", hint="list at least one mapping of dotted keys to values")
    entries = []
    for j, values in enumerate(axis.list):
        origin = f"{where}.list[{j}]"
        _check_entry(origin, values, common)
        entries.append(Entry(origin, dict(values)))
    return entries


def _random_entries(where: str, spec: RandomParams, common: dict[str, Any]) -> list[Entry]:
    where = f"{where}.random"
    if not spec.params:
        raise ConfigError(f"{where}.params is empty", hint="give e.g. params: {optim.lr: {log_uniform: [1e-4, 1e-2]}}")
    samplers = {key: _sampler(f"{where}.params.{key}", dist) for key, dist in spec.params.items()}
    rng = random.Random(spec.seed)
    entries = []
    for n in range(spec.count):
        values = {key: sample(rng) for key, sample in samplers.items()}
        origin = f"{where}[{n}]"
        _check_entry(origin, values, common)
        entries.append(Entry(origin, values))
    return entries


def _mixture_entries(where: str, raw: Any, common: dict[str, Any], *, check_data: bool) -> list[Entry]:
    """Dirichlet-drawn `data.weights` values (science/mixture_axis.py), each checked like a list entry."""
    from pretrainlab.science.mixture_axis import WEIGHTS_KEY, MixtureAxis, axis_domains, dirichlet_mixtures

    params = validate(MixtureAxis, raw, source=where).mixture
    where = f"{where}.mixture"
    data_path = validate(RunConfig, common).data.path
    domains = axis_domains(params, data_path, where=where, check_data=check_data)
    try:
        mixtures = dirichlet_mixtures(domains, params.n, alpha=params.alpha, seed=params.seed, prior=params.prior,
                                      include_uniform=params.include_uniform)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from None
    entries = []
    for j, weights in enumerate(mixtures):
        origin = f"{where}.uniform" if params.include_uniform and j == 0 else \
            f"{where}[{j - 1 if params.include_uniform else j}]"
        values = {WEIGHTS_KEY: weights}
        _check_entry(origin, values, common)
        entries.append(Entry(origin, values))
    return entries


def _sampler(where: str, dist: dict[str, Any]) -> Any:
    """A function rng -> value for one `{distribution: arguments}` mapping (floats to 4 significant digits)."""
    if len(dist) != 1:
        raise ConfigError(f"{where}: give exactly one distribution (one of {', '.join(DISTRIBUTIONS)}); got {list(dist)}")
    kind, args = next(iter(dist.items()))
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1, cutoff=0.5)
        raise ConfigError(
            f"{where}: unknown distribution {kind!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (one of {', '.join(DISTRIBUTIONS)})"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: choice takes a non-empty list of values (got {args!r})")
        return lambda rng: copy.deepcopy(args[rng.randrange(len(args))])
    ok = (
        isinstance(args, list) and len(args) == 2
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
    )
    if not ok or args[0] > args[1]:
        raise ConfigError(f"{where}: {kind} takes [low, high] with finite numbers, low <= high (got {args!r})")
    lo, hi = args
    if kind == "int_uniform":
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: int_uniform takes whole numbers (got {args!r})")
        return lambda rng: rng.randint(int(lo), int(hi))
    if kind == "log_uniform":
        if lo <= 0:
            raise ConfigError(f"{where}: log_uniform needs low > 0 (got {args!r})")
        return lambda rng: _round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return lambda rng: _round(rng.uniform(lo, hi))


def _round(x: float) -> float:
    """4 significant digits: readable point names and configs, far finer than any sweep resolves."""
    return float(f"{x:.4g}")


def _check_disjoint(axes: list[list[Entry]]) -> None:
    owner: dict[str, int] = {}
    for i, entries in enumerate(axes):
        for key in {k for e in entries for k in e.values}:
            if key in owner and owner[key] != i:
                raise ConfigError(
                    f"axes[{owner[key]}] and axes[{i}] both set {key!r}",
                    hint="set each key in one axis only (a list axis sets keys that go together)",
                )
            owner[key] = i


# --------------------------------------------------------------------------------------------
# points
# --------------------------------------------------------------------------------------------


def seeds_of(spec: SweepSpec, base_seed: int) -> list[int]:
    """The seeds every point repeats with: `seeds: N` counts up from the base config's seed."""
    return list(spec.seeds) if isinstance(spec.seeds, list) else [base_seed + k for k in range(spec.seeds)]


def _expand(spec: SweepSpec, common: dict[str, Any], axes: list[list[Entry]], folder: Path) -> list[Point]:
    base_seed = validate(RunConfig, common).seed
    combos = list(itertools.product(*axes)) if axes else [()]
    swept = list(dict.fromkeys(k for entries in axes for e in entries for k in e.values))
    labels = key_labels(swept)
    raw: list[tuple[str, dict[str, Any], int, str]] = []
    for combo in combos:
        values: dict[str, Any] = {}
        for entry in combo:
            values.update(entry.values)
        origin = ", ".join(e.origin for e in combo) or "base"
        for seed in seeds_of(spec, base_seed):
            raw.append((point_name(values, seed, labels), values, seed, origin))
    names = _unique_names(raw)
    points = []
    for name, (_, values, seed, origin) in zip(names, raw):
        overrides = {**spec.overrides, **values, "seed": seed}
        tree = _with_values(common, values, origin)
        tree.update(seed=seed, name=name, out_dir=str(folder / "runs"))
        cfg = validate(RunConfig, tree, source=f"point {name!r} ({origin})")
        resolved = cfg.model_dump(mode="json")
        # Every swept key, with the value this point runs with (the base's where its entries leave it).
        axes_values = {k: values[k] if k in values else get_dotted(resolved, k) for k in swept}
        points.append(Point(name, seed, axes_values, overrides, origin, cfg))
    return points


def get_dotted(tree: Any, key: str) -> Any:
    """The value at `a.b.c` in a config tree (list items by index), or None where there is none."""
    node = tree
    for part in key.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def key_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels for swept keys: the last part (`optim.lr` -> `lr`), the whole key where two share it."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(value: Any) -> str:
    """A compact text form of a swept value (YAML-like: true, null, 0.001, tiny, {a: 1} as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def point_name(values: dict[str, Any], seed: int, labels: dict[str, str] | None = None) -> str:
    """A readable, filesystem-safe name from the swept values and the seed, e.g. `lr-0.001_preset-tiny_s0`.

    A name depends only on the point's own values and seed (and the labels of the sweep's keys), never on
    the other points, so adding a point to a sweep renames none. Where the readable form is lossy (a value
    whose text could stand for another value: characters replaced to be file-safe, text that reads as a
    number or contains '_', a list or mapping) or longer than MAX_NAME_LEN, a hash of the exact values is
    appended (`path-p_q_s0-1a2b3c4d5e`) and the readable part shortened to keep the name within MAX_NAME_LEN.
    """
    labels = labels or key_labels(list(values))
    parts = [f"{labels.get(k, k)}-{_name_value(v)}" for k, v in values.items()]
    body = "_".join(parts) if parts else "base"
    readable = _SAFE.sub("_", body)
    tail = f"_s{seed}"
    exact = readable == body and all(_exact_text(v) for v in values.values())
    if exact and len(readable) + len(tail) <= MAX_NAME_LEN:
        return readable + tail
    digest = hashlib.sha1(json.dumps({"seed": seed, "values": values}, sort_keys=True, default=str).encode())
    suffix = f"{tail}-{digest.hexdigest()[:10]}"
    return readable[: max(0, MAX_NAME_LEN - len(suffix))] + suffix


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9.+-]*")
_NOT_WORDS = {"true", "false", "null", "none", "nan", "inf", "infinity", "yes", "no", "on", "off"}


def _exact_text(value: Any) -> bool:
    """Whether `_name_value(value)` names `value` and nothing else within a point name."""
    if value is None or isinstance(value, (bool, int, float)):
        return True  # null/true/false, digits, and floats always written with '.', 'e', nan or inf
    if isinstance(value, str):
        return bool(_WORD.fullmatch(value)) and value.lower() not in _NOT_WORDS
    return False


def _name_value(value: Any) -> str:
    """A value as a name part: mappings as `code3+web1`, lists as `a+b`, floats exactly (`1.0`, `0.001`),
    the rest as `format_value`."""
    if isinstance(value, dict):
        return "+".join(f"{k}{_name_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "+".join(_name_value(v) for v in value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return format_value(value)


def _unique_names(raw: list[tuple[str, dict[str, Any], int, str]]) -> list[str]:
    """The names; identical points (same values and seed) are an error naming both entries."""
    seen: dict[tuple[str, int], str] = {}
    by_name: dict[str, str] = {}
    for name, values, seed, origin in raw:
        key = (json.dumps(values, sort_keys=True, default=str), seed)
        if key in seen:
            raise ConfigError(
                f"{seen[key]} and {origin} give the same point {name!r} (same values, seed {seed})",
                hint="remove the repeated value or list entry (use seeds: for repeats)",
            )
        seen[key] = origin
        if name in by_name:  # different values, one name: only a 40-bit hash collision gets here
            raise ConfigError(
                f"{by_name[name]} and {origin} get the same point name {name!r}",
                hint="change one of the values slightly (e.g. add a digit)",
            )
        by_name[name] = origin
    return [name for name, *_ in raw]


# --------------------------------------------------------------------------------------------
# the checks `pretrainlab train` makes before building a model
# --------------------------------------------------------------------------------------------


def check_points(points: Sequence[Point], *, check_data: bool = True) -> None:
    """Run every point's pre-build checks; errors name the point and the axis entries it comes from.

    With `check_data` the files each point needs must exist: its prepared data, and its teacher runs.
    """
    from pretrainlab.data.prepared import PreparedData

    vocab: dict[str, int] = {}
    domains: dict[str, list[str]] = {}
    if check_data:
        for path in dict.fromkeys(p.config.data.path for p in points):
            users = [p.name for p in points if p.config.data.path == path]
            try:
                prepared = PreparedData(path)
                vocab[path], domains[path] = prepared.vocab_size, list(prepared.domains)
            except PretrainlabError as e:
                raise type(e)(f"data.path of {len(users)} point(s), e.g. {users[0]!r}: {e.message}", hint=e.hint) from None
        check_teachers(points)
    for p in points:
        try:
            if p.config.data.path in domains:
                check_mixture_domains(p.config, domains[p.config.data.path])
            check_run_config(p.config, vocab_size=vocab.get(p.config.data.path))
        except PretrainlabError as e:
            raise type(e)(f"point {p.name!r} ({p.origin}): {e.message}", hint=e.hint) from None


def check_mixture_domains(cfg: RunConfig, domains: Sequence[str]) -> None:
    """`data.weights`, every `data.stages[i].weights` and a per-domain `data.max_epochs` name only `domains`."""
    from pretrainlab.science.mixture_axis import check_weight_domains

    check_weight_domains(cfg.data.weights, domains, where="data.weights")
    for i, stage in enumerate(cfg.data.stages):
        check_weight_domains(stage.weights, domains, where=f"data.stages[{i}].weights")
    if isinstance(cfg.data.max_epochs, dict):
        check_weight_domains(cfg.data.max_epochs, domains, where="data.max_epochs")


def check_teachers(points: Sequence[Point]) -> None:
    """Every teacher run a point names (`teacher.runs`, ensemble folders expanded) is a run folder that exists."""
    checked: set[tuple[str, ...]] = set()
    for p in points:
        if p.config.teacher is None or tuple(p.config.teacher.runs) in checked:
            continue
        checked.add(tuple(p.config.teacher.runs))
        from pretrainlab.eval.members import expand_members

        try:
            members = expand_members(list(p.config.teacher.runs))
        except PretrainlabError as e:
            raise type(e)(f"point {p.name!r} ({p.origin}): teacher: {e.message}", hint=e.hint) from None
        for run in members:
            if not (run / "config.yaml").is_file():
                what = "does not exist" if not run.exists() else "is not a run folder (no config.yaml)"
                raise ConfigError(
                    f"point {p.name!r} ({p.origin}): teacher run {str(run)!r} {what}",
                    hint="train the teacher first, or fix teacher.runs (relative paths resolve from the folder "
                    "you run the sweep in)",
                )


def check_run_config(cfg: RunConfig, *, vocab_size: int | None) -> None:
    """The cross-field checks of a single-process training run (ConfigError naming the field)."""
    from pretrainlab.model import resolve_model_config
    from pretrainlab.objectives import build_objective
    from pretrainlab.optim import check_optimizer, check_schedule
    from pretrainlab.train.batch_plan import plan_batches
    from pretrainlab.train.callbacks import build_callbacks

    if cfg.parallel != "none":
        raise ConfigError(
            f"parallel={cfg.parallel}: a sweep runs each point as one process",
            hint="sweep with parallel=none (the Ray executor spreads runs over machines instead)",
        )
    plan_batches(cfg)
    check_schedule(cfg.schedule, cfg.train.steps)
    check_optimizer(cfg.optim)
    build_callbacks(cfg.callbacks)
    build_objective(cfg.objective, cfg.objective_options)
    if vocab_size is not None:
        resolve_model_config(cfg.model, vocab_size=vocab_size, seq_len=cfg.data.seq_len)
