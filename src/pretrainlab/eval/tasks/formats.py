"""Readers for the task-file layouts people have, and detection of a file's layout from its content.

Every reader turns one local file into a list of examples (see `examples.py`); `.bz2`, `.gz` and `.xz`
files are decompressed transparently. A malformed file is a DataError naming the file, the line and what
is wrong (bad JSON, a missing key, a gold answer out of range, a HellaSwag file whose line count is not a
multiple of 6...).

Layouts (the `format` of a task):

- `multiple_choice`  llm-foundry ICL jsonl: `query`, `choices`, `gold` (ARC, PIQA, COPA, OpenBookQA, BoolQ)
- `schema`           llm-foundry ICL jsonl: `context_options`, `continuation`, `gold` (WinoGrande)
- `language_modeling` llm-foundry ICL jsonl: `context`, `continuation` (LAMBADA, BigBench, arithmetic)
- `minimal_pairs`    BLiMP jsonl: `sentence_good`, `sentence_bad` (other keys ignored)
- `hellaswag_text`   HellaSwag as text, 6 lines per task: "label: context", gold index, 4 endings
- `hellaswag_jsonl`  HellaSwag's original jsonl: `ctx` (or `ctx_a` + `ctx_b`), `endings`, `label`
- `piqa`             PIQA's original layout: X.jsonl (`goal`, `sol1`, `sol2`) + X-labels.lst (0/1 a line)
- `arc`              ARC's original jsonl: `question` {`stem`, `choices` [{`text`, `label`}]}, `answerKey`
                     (the Hugging Face layout, `question` a string and `choices` {`text`: [], `label`: []},
                     is read too)
- `text`             any text file: its perplexity, loss and bits per byte

HellaSwag: lm-evaluation-harness builds the context as preprocess(activity_label + ": " + ctx_a + " " +
ctx_b.capitalize()) and preprocesses every ending (preprocess: strip, " [title]" -> ". ", other bracketed
tags dropped, double spaces collapsed). `hellaswag_jsonl` does exactly that, so its requests are
lm-evaluation-harness's. The `hellaswag_text` layout holds "activity_label: ctx" with ctx = ctx_a + " " +
ctx_b already joined, so ctx_b's first letter cannot be found to capitalise: it gets the rest of
preprocess, and a context whose ctx_b starts with a lowercase letter ("... on a roof. he" where
lm-evaluation-harness has "... on a roof. He", most of the validation set) differs from lm-eval's by that
one letter. Use the jsonl for numbers comparable with lm-evaluation-harness. PIQA and ARC contexts become
"Question: <goal/stem>" as in lm-evaluation-harness.

`text` files: one example per line (`limit` scores the first N lines, `max_bytes` the first N bytes);
the scored lines are joined back with "\n" and scored as one text.

Recipes add layouts (e.g. generated synthetic tasks that need no file) with `FORMATS.register(name)`.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pretrainlab.errors import DataError
from pretrainlab.eval.tasks.examples import (
    Continuation,
    Example,
    MinimalPair,
    MultipleChoice,
    Schema,
    Text,
)
from pretrainlab.registry import Registry

Reader = Callable[[Path | None, Mapping[str, Any]], list[Example]]


@dataclass(frozen=True)
class Format:
    """A file layout: `read(path, options) -> examples`, all of one `kind`.

    `needs_file=False` for generated tasks (the path is then optional); `options` names the extra task
    options the reader understands (beyond the common ones every task takes); `defaults` are option
    values the layout implies (PIQA's and ARC's "Question: ..." contexts want the "\nAnswer: " delimiter),
    under those of a registered task and those given with the task.
    """

    read: Reader
    description: str
    kind: str  # the kind of example it yields ("multiple_choice", "schema", ...), which picks the scorer
    needs_file: bool = True
    options: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)  # option defaults, e.g. the delimiter


FORMATS: Registry[Format] = Registry("task file format")

# ----------------------------------------------------------------------------------------------- files

_OPENERS: dict[str, Callable[..., BinaryIO]] = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it ends in .bz2/.gz/.xz; DataError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"task file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""),
            hint="check the path given with the task (NAME=PATH or tasks: {NAME: PATH})",
        )
    opener = _OPENERS.get(path.suffix.lower())
    return opener(path, "rb") if opener is not None else open(path, "rb")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a UTF-8 text file (decoded line by line, so a bad
    byte is reported on its own line)."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason})", hint="save the file as UTF-8") from None
    except (OSError, EOFError, lzma.LZMAError) as e:  # a truncated or corrupt archive
        raise DataError(f"{path}: cannot be read ({e})", hint="check that the file is complete") from None


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    n = 0
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})",
                hint="each line must be one JSON object",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        n += 1
        yield lineno, obj
    if n == 0:
        raise DataError(f"{path} holds no examples (it is empty)")


def _get(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in obj:
        raise DataError(
            f"{where}: missing key {key!r} (the line has: {', '.join(map(repr, obj)) or 'nothing'})",
            hint="check that the file's format matches the task's (see docs/evaluation.md)",
        )
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(f"{where}: {key!r} must be {what}, got {json.dumps(value)[:60]}")
    return value


def _str_list(obj: dict[str, Any], key: str, where: str, min_len: int = 1) -> tuple[str, ...]:
    value = _get(obj, key, where, list, "a list of strings")
    if len(value) < min_len or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {key!r} must be a list of at least {min_len} strings, got {json.dumps(value)[:60]}")
    return tuple(value)


def _gold(value: Any, n: int, key: str, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():  # HellaSwag's jsonl writes labels as strings
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{where}: {key!r} must be an integer index, got {json.dumps(value)[:40]}")
    if not 0 <= value < n:
        raise DataError(f"{where}: {key!r} = {value} is out of range: there are {n} choices (0..{n - 1})")
    return value


# ----------------------------------------------------------------------------------------------- llm-foundry


def read_multiple_choice(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        query = _get(obj, "query", where, str, "a string")
        choices = _str_list(obj, "choices", where, min_len=2)
        gold = _gold(_get(obj, "gold", where, (int, str), "an integer"), len(choices), "gold", where)
        out.append(MultipleChoice(query, choices, gold, where))
    return out


def read_schema(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        contexts = _str_list(obj, "context_options", where, min_len=2)
        continuation = _get(obj, "continuation", where, str, "a string")
        gold = _gold(_get(obj, "gold", where, (int, str), "an integer"), len(contexts), "gold", where)
        out.append(Schema(contexts, continuation, gold, where))
    return out


def read_language_modeling(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        context = _get(obj, "context", where, str, "a string")
        continuation = _get(obj, "continuation", where, str, "a string")
        if not continuation:
            raise DataError(f"{where}: 'continuation' is empty; there is nothing to predict")
        out.append(Continuation(context, continuation, where))
    return out


def read_minimal_pairs(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        good = _get(obj, "sentence_good", where, str, "a string")
        bad = _get(obj, "sentence_bad", where, str, "a string")
        if not good or not bad:
            raise DataError(f"{where}: an empty sentence; both 'sentence_good' and 'sentence_bad' need text")
        out.append(MinimalPair(good, bad, where))
    return out


# ----------------------------------------------------------------------------------------------- HellaSwag


def hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing (WikiHow "[title]" marks, bracketed tags, double spaces)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag_text(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    """6 lines per task: "<activity label>: <context>", the gold index (0-3), then the 4 endings."""
    assert path is not None
    lines = list(numbered_lines(path))
    while lines and not lines[-1][1].strip():  # a trailing blank line is harmless
        lines.pop()
    if not lines:
        raise DataError(f"{path} holds no examples (it is empty)")
    if len(lines) % 6:
        raise DataError(
            f"{path}:{len(lines)}: the file has {len(lines)} lines, not a multiple of 6: the HellaSwag text layout "
            f"is 6 lines per task (context, gold index, 4 endings); the last task, from line "
            f"{len(lines) - len(lines) % 6 + 1}, is incomplete",
            hint="check that no ending spans two lines and the file is complete",
        )
    out: list[Example] = []
    for start in range(0, len(lines), 6):
        (lineno, ctx), (label_line, label) = lines[start], lines[start + 1]
        if not label.strip().isdigit():
            raise DataError(
                f"{path}:{label_line}: expected the gold index (0-3) of the task starting at line {lineno}, "
                f"got {label[:40]!r}",
                hint="the HellaSwag text layout is 6 lines per task: context, gold index, 4 endings",
            )
        endings = tuple(hellaswag_clean(e) for _, e in lines[start + 2 : start + 6])
        gold = _gold(int(label), 4, "gold index", f"{path}:{label_line}")
        out.append(MultipleChoice(hellaswag_clean(ctx), endings, gold, f"{path}:{lineno}"))
    return out


def read_hellaswag_jsonl(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    """HellaSwag's own jsonl: context "<activity_label>: <ctx_a> <Ctx_b>" as lm-evaluation-harness builds it."""
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        if "ctx_a" in obj:
            ctx_b = _get(obj, "ctx_b", where, str, "a string")
            ctx = _get(obj, "ctx_a", where, str, "a string") + " " + ctx_b.capitalize()
        else:
            ctx = _get(obj, "ctx", where, str, "a string")
        label = obj.get("activity_label")
        if isinstance(label, str) and label:
            ctx = f"{label}: {ctx}"
        endings = _str_list(obj, "endings", where, min_len=2)
        raw = _get(obj, "label", where, (int, str), "an integer")
        if raw == "":
            raise DataError(f"{where}: 'label' is empty (HellaSwag's test split has no answers)",
                            hint="evaluate on the validation split")
        gold = _gold(raw, len(endings), "label", where)
        out.append(MultipleChoice(hellaswag_clean(ctx), tuple(hellaswag_clean(e) for e in endings), gold, where))
    return out


# ----------------------------------------------------------------------------------------------- PIQA, ARC


def piqa_labels_path(path: Path, options: Mapping[str, Any]) -> Path:
    """`options["labels"]`, else the sibling "<stem>-labels.lst" (valid.jsonl -> valid-labels.lst)."""
    if options.get("labels"):
        return Path(str(options["labels"]))
    name = path.name
    for suffix in (".bz2", ".gz", ".xz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name(f"{name}-labels.lst")


def read_piqa(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    """X.jsonl (`goal`, `sol1`, `sol2`) with its answers in X-labels.lst (option `labels` to name another)."""
    assert path is not None
    labels_path = piqa_labels_path(path, options)
    if not labels_path.is_file():
        raise DataError(
            f"the PIQA answers for {path} are missing: {labels_path} does not exist",
            hint="put the X-labels.lst file next to X.jsonl, or name it with the task option labels: PATH",
        )
    labels = [(n, s.strip()) for n, s in numbered_lines(labels_path) if s.strip()]
    questions = list(jsonl_records(path))
    if len(labels) != len(questions):
        raise DataError(
            f"{labels_path} has {len(labels)} labels but {path} has {len(questions)} questions",
            hint="the two files must be aligned line for line",
        )
    out: list[Example] = []
    for (lineno, obj), (label_line, label) in zip(questions, labels):
        where = f"{path}:{lineno}"
        goal = _get(obj, "goal", where, str, "a string")
        sols = (_get(obj, "sol1", where, str, "a string"), _get(obj, "sol2", where, str, "a string"))
        if label not in ("0", "1"):
            raise DataError(f"{labels_path}:{label_line}: a PIQA label must be 0 or 1, got {label[:20]!r}")
        out.append(MultipleChoice(f"Question: {goal}", sols, int(label), where))
    return out


def read_arc(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    """AI2's ARC jsonl (or the Hugging Face rows): context "Question: <stem>", gold from `answerKey`."""
    assert path is not None
    out: list[Example] = []
    for lineno, obj in jsonl_records(path):
        where = f"{path}:{lineno}"
        question = _get(obj, "question", where, (dict, str), "an object or a string")
        if isinstance(question, dict):
            stem = _get(question, "stem", where, str, "a string")
            items = _get(question, "choices", where, list, "a list of {text, label}")
            if not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in items):
                raise DataError(f"{where}: 'question.choices' must be a list of objects with 'text' and 'label'")
            texts = [c["text"] for c in items]
            keys = [str(c.get("label")) for c in items]
        else:
            stem = question
            choices = _get(obj, "choices", where, dict, "an object with 'text' and 'label' lists")
            texts, keys = _str_list(choices, "text", where, 2), [str(k) for k in choices.get("label", [])]
        key = str(_get(obj, "answerKey", where, (str, int), "a choice label"))
        if len(texts) < 2 or len(keys) != len(texts):
            raise DataError(f"{where}: needs at least 2 choices, each with a label")
        if key not in keys:
            raise DataError(f"{where}: answerKey {key!r} is not one of the choice labels {keys}")
        out.append(MultipleChoice(f"Question: {stem}", tuple(texts), keys.index(key), where))
    return out


# ----------------------------------------------------------------------------------------------- text


def read_text(path: Path | None, options: Mapping[str, Any]) -> list[Example]:
    """One example per line (the text scorer joins the scored lines back with "\n" into one text), so `limit`
    caps the lines scored; option `max_bytes` keeps only the file's first N UTF-8 bytes (never half a
    character), and stops reading there."""
    assert path is not None
    budget = options.get("max_bytes")
    budget = None if budget is None else int(budget)
    out: list[Example] = []
    for lineno, line in numbered_lines(path):
        if budget is not None:
            cost = len(line.encode("utf-8")) + (1 if out else 0)  # the "\n" joining it to the line before
            if cost > budget:
                part = line.encode("utf-8")[: max(0, budget - (1 if out else 0))].decode("utf-8", errors="ignore")
                if part:
                    out.append(Text(part, f"{path}:{lineno}"))
                break
            budget -= cost
        out.append(Text(line, f"{path}:{lineno}"))
    while out and not out[-1].text:  # trailing blank lines add nothing to score
        out.pop()
    if not any(ex.text.strip() for ex in out):  # type: ignore[union-attr]
        raise DataError(f"{path} holds no text (it is empty)")
    return out


for _name, _reader, _kind, _doc, _opts in (
    ("multiple_choice", read_multiple_choice, "multiple_choice", "llm-foundry jsonl: query, choices, gold", ()),
    ("schema", read_schema, "schema", "llm-foundry jsonl: context_options, continuation, gold", ()),
    ("language_modeling", read_language_modeling, "language_modeling", "llm-foundry jsonl: context, continuation",
     ()),
    ("minimal_pairs", read_minimal_pairs, "minimal_pairs", "BLiMP jsonl: sentence_good, sentence_bad", ()),
    ("hellaswag_text", read_hellaswag_text, "multiple_choice", "HellaSwag text: 6 lines per task", ()),
    ("hellaswag_jsonl", read_hellaswag_jsonl, "multiple_choice", "HellaSwag jsonl: ctx, endings, label", ()),
    ("piqa", read_piqa, "multiple_choice", "PIQA: X.jsonl (goal, sol1, sol2) + X-labels.lst", ("labels",)),
    ("arc", read_arc, "multiple_choice", "ARC jsonl: question {stem, choices}, answerKey", ()),
    ("text", read_text, "text", "plain text: perplexity and bits per byte", ("max_bytes",)),
):
    _defaults = {"delimiter": "\nAnswer: "} if _name in ("piqa", "arc") else {}
    FORMATS.register(_name)(Format(_reader, _doc, _kind, options=_opts, defaults=_defaults))

TEXT_LAYOUTS = frozenset({"hellaswag_text", "text"})  # formats of files that are not JSON lines


# ----------------------------------------------------------------------------------------------- detection

# Keys that identify a JSON-lines layout, most specific first.
_SIGNATURES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"context_options", "continuation", "gold"}), "schema"),
    (frozenset({"query", "choices", "gold"}), "multiple_choice"),
    (frozenset({"sentence_good", "sentence_bad"}), "minimal_pairs"),
    (frozenset({"endings", "label"}), "hellaswag_jsonl"),
    (frozenset({"goal", "sol1", "sol2"}), "piqa"),
    (frozenset({"question", "answerKey"}), "arc"),
    (frozenset({"context", "continuation"}), "language_modeling"),
)


def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    return ".jsonl" in suffixes or ".json" in suffixes


def detect_format(path: str | Path) -> str:
    """The layout of `path`: JSON lines by the keys of the first object; text files are `hellaswag_text`
    when their first 12 lines follow that layout (a gold index 0-3 on lines 2 and 8), else `text`."""
    path = Path(path)
    if _is_jsonl(path):
        for lineno, obj in jsonl_records(path):
            keys = set(obj)
            for signature, name in _SIGNATURES:
                if signature <= keys:
                    return name
            known = "; ".join(f"{n}: {', '.join(sorted(s))}" for s, n in _SIGNATURES)
            raise DataError(
                f"{path}:{lineno}: cannot tell the task format from the keys {sorted(keys)}",
                hint=f"give the format (NAME=PATH with a known task name, or tasks: {{NAME: {{path: ..., format: "
                f"...}}}}); the formats known by their keys are {known}",
            )
    head = []
    for _, line in numbered_lines(path):
        head.append(line)
        if len(head) == 12:
            break
    if len(head) == 12 and all(head[i].strip() in ("0", "1", "2", "3") for i in (1, 7)):
        return "hellaswag_text"
    return "text"
