"""The task registry (name -> file layouts, scorer, default options) and task specs from configs and the CLI.

A task is named in `tasks:` of a run config or with `pretrainlab eval RUN --tasks SPEC...`:

- `NAME=PATH` / `{NAME: PATH}`: a registered task read from a local file; on the command line an
  unregistered NAME is the task's name and the layout is read from the file (as for a path alone);
- `NAME` alone: a registered task that brings its own file (or generates its examples);
- `PATH` alone: the task is named after the file (`arc_easy.jsonl` -> `arc_easy`); a name that is
  registered brings its defaults, any other file is read in the layout its keys show;
- `{NAME: {path: PATH, format: multiple_choice, delimiter: "\\nAnswer: ", num_fewshot: 5, ...}}`: any
  name, with its layout (`format`, `auto` to detect it) and options given (`fewshot_path: FILE` draws
  the few-shot examples from another file in the same layout, e.g. the train split).

Recipes add tasks with `TASKS.register(name)(TaskDef(...))` (and, for a new layout, `FORMATS.register`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.tasks.formats import FORMATS, TEXT_LAYOUTS, detect_format
from pretrainlab.registry import Registry

# Options every task takes (see prompts.py); a layout may accept more (Format.options).
COMMON_OPTIONS = ("delimiter", "fewshot_delimiter", "num_fewshot", "limit", "seed", "fewshot_path")


@dataclass(frozen=True)
class TaskDef:
    """A registered task: the layouts its file may have (the first is used for a text file whose layout
    cannot be detected), default options, a default file, and a scorer when not the layout's own."""

    formats: tuple[str, ...]
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    scorer: str | None = None


@dataclass
class TaskSpec:
    """One task to score: its name, the resolved layout and scorer, the file, and every option."""

    name: str
    format: str
    scorer: str
    path: str | None
    options: dict[str, Any] = field(default_factory=dict)


TASKS: Registry[TaskDef] = Registry("task")

_ANSWER = {"delimiter": "\nAnswer: "}
for _name, _formats, _options, _doc in (
    ("arc_easy", ("multiple_choice", "arc"), _ANSWER, "ARC-Easy science questions (4 choices)"),
    ("arc_challenge", ("multiple_choice", "arc"), _ANSWER, "ARC-Challenge science questions (4 choices)"),
    ("hellaswag", ("hellaswag_text", "hellaswag_jsonl", "multiple_choice"), {}, "HellaSwag sentence endings"),
    ("piqa", ("multiple_choice", "piqa"), _ANSWER, "PIQA physical commonsense (2 solutions)"),
    ("copa", ("multiple_choice",), {}, "COPA cause and effect (2 choices)"),
    ("openbookqa", ("multiple_choice",), {}, "OpenBookQA science facts (4 choices)"),
    ("boolq", ("multiple_choice",), _ANSWER, "BoolQ yes/no questions on a passage"),
    ("winogrande", ("schema",), {}, "WinoGrande pronoun resolution (partial scoring)"),
    ("lambada", ("language_modeling",), {}, "LAMBADA last word: greedy exact match and perplexity"),
    ("blimp", ("minimal_pairs",), {}, "BLiMP minimal pairs: the grammatical sentence is more likely"),
    # Generic names: any file in the layout.
    ("multiple_choice", ("multiple_choice",), {}, "any llm-foundry multiple-choice jsonl"),
    ("schema", ("schema",), {}, "any llm-foundry schema jsonl"),
    ("language_modeling", ("language_modeling",), {}, "any llm-foundry language-modelling jsonl"),
    ("minimal_pairs", ("minimal_pairs",), {}, "any sentence_good / sentence_bad jsonl"),
    ("text", ("text",), {}, "any text file: loss, perplexity, bits per byte"),
):
    TASKS.register(_name)(TaskDef(_formats, _doc, dict(_options)))


def parse_task_args(args: list[str]) -> dict[str, Any]:
    """`--tasks` words (NAME=PATH, NAME, PATH) as the `tasks:` mapping `resolve_tasks` reads."""
    out: dict[str, Any] = {}
    for arg in args:
        if "=" in arg and not Path(arg).exists():
            name, path = arg.split("=", 1)
            if not name or not path:
                raise ConfigError(f"--tasks {arg!r}: expected NAME=PATH",
                                  hint="e.g. --tasks arc_easy=data/arc_easy.jsonl")
            # an unregistered name names the task; its layout is read from the file
            entry: Any = path if name in TASKS else {"path": path, "format": "auto"}
        elif arg in TASKS:
            name, entry = arg, None
        elif Path(arg).exists() or "/" in arg or "." in arg:
            name = task_name_of(arg)
            entry = arg if name in TASKS else {"path": arg, "format": "auto"}
        else:
            raise _unknown(arg)
        if name in out:
            raise ConfigError(f"--tasks names the task {name!r} twice", hint="name one of them: NAME=PATH")
        out[name] = entry
    return out


def task_name_of(path: str | Path) -> str:
    """The task name a file stands for: its name without a .bz2/.gz/.xz suffix and its extension
    (`arc_easy.jsonl` -> `arc_easy`, `hellaswag_val.txt.bz2` -> `hellaswag_val`)."""
    name = Path(path).name
    for s in (".bz2", ".gz", ".xz"):
        if name.lower().endswith(s):
            name = name[: -len(s)]
    return Path(name).stem or name or str(path)


def resolve_tasks(tasks: Mapping[str, Any]) -> list[TaskSpec]:
    """TaskSpecs of a `tasks:` mapping (TaskEvalConfig.tasks, or `parse_task_args` of the CLI words).

    Values: None (the task's own file), a path, or a mapping with `path`, `format` and options. An unknown
    name without a `format` is a ConfigError listing the known ones; a file whose layout the task does not
    read, or an unknown option, is an error naming the task.
    """
    return [_resolve(str(name), value) for name, value in tasks.items()]


def _resolve(name: str, value: Any) -> TaskSpec:
    field_ = f"tasks.{name}"
    if value is None or isinstance(value, (str, Path)):
        value = {} if value is None else {"path": str(value)}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{field_}: expected a path or a mapping with path/format/options, got {value!r}",
            hint=f"e.g. tasks: {{{name}: data/{name}.jsonl}}",
        )
    entry = dict(value)
    path = entry.pop("path", None)
    fmt = entry.pop("format", None)
    if name in TASKS:
        task = TASKS.get(name)
    elif fmt is not None:
        task = TaskDef((), "a task named in the config")
    else:
        raise _unknown(name)
    path = str(path) if path is not None else task.path
    if fmt in (None, "auto"):
        fmt = _choose_format(name, task, path)
    else:
        FORMATS.get(str(fmt), field=f"{field_}.format")
    layout = FORMATS.get(str(fmt))
    if path is None and layout.needs_file:
        raise ConfigError(
            f"task {name!r} needs a file: its examples are read from a local {fmt} file",
            hint=f"give the path: --tasks {name}=PATH, or tasks: {{{name}: PATH}} in the config",
        )
    allowed = set(COMMON_OPTIONS) | set(layout.options)
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(
            f"{field_}: unknown option(s) {', '.join(map(repr, unknown))} (valid: path, format, "
            f"{', '.join(sorted(allowed))})"
        )
    _check_options(field_, entry)
    scorer = task.scorer or layout.kind
    from pretrainlab.eval.tasks.scorers import SCORERS

    SCORERS.get(scorer, field=f"{field_} scorer")
    return TaskSpec(name, str(fmt), scorer, path, {**layout.defaults, **task.options, **entry})


def _check_options(field_: str, options: Mapping[str, Any]) -> None:
    """The common options' types and ranges, a ConfigError naming `tasks.<name>.<option>` (before any file is read)."""
    from pretrainlab.eval.tasks.prompts import check_count

    for name, minimum in (("num_fewshot", 0), ("limit", 1), ("seed", None), ("max_bytes", 1)):
        if name in options and not (name == "limit" and options[name] is None):
            check_count(options[name], f"{field_}.{name}", minimum=minimum)
    for name in ("delimiter", "fewshot_delimiter", "fewshot_path"):
        if name in options and not isinstance(options[name], str):
            raise ConfigError(f"{field_}.{name} must be a string, got {options[name]!r}")


def _choose_format(name: str, task: TaskDef, path: str | None) -> str:
    if path is None:
        if task.formats:
            return task.formats[0]  # a generated task's layout, or one that needs a file (said next)
        raise ConfigError(f"task {name!r} needs a file", hint=f"give the path: tasks: {{{name}: {{path: PATH}}}}")
    try:
        detected = detect_format(path)
    except DataError as e:
        hint = e.hint
        close = difflib.get_close_matches(name, TASKS.names(), n=1, cutoff=0.5) if name not in TASKS else []
        if close:  # an unregistered name is read as the task's own name: it may be a misspelt registered one
            hint = (f"{hint}; " if hint else "") + f"{name!r} is not a registered task: did you mean {close[0]!r}?"
        raise DataError(f"task {name!r}: {e.message}", hint=hint) from None
    if not task.formats or detected in task.formats:
        return detected
    if detected in TEXT_LAYOUTS:  # a text file is read in the task's text layout (e.g. HellaSwag's), if any
        for fmt in task.formats:
            if fmt in TEXT_LAYOUTS:
                return fmt
    raise DataError(
        f"task {name!r}: {path} looks like a {detected!r} file, but {name} reads {' or '.join(task.formats)}",
        hint=f"check the file, or score it as its own task: --tasks {detected}={path}",
    )


def _unknown(name: str) -> ConfigError:
    known = TASKS.names()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return ConfigError(
        f"unknown task {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f" (known: {', '.join(known)})",
        hint="use a known name (NAME=PATH), a path alone (the layout is read from its keys), or give the layout "
        f"in the config: tasks: {{{name}: {{path: PATH, format: multiple_choice}}}}",
    )
