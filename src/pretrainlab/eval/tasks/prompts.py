"""From examples to scored strings and token ids: the delimiter, the few-shot prefix, the tokenisation.

Three choices fix what is scored, and they follow lm-evaluation-harness so scores are comparable:

- **Delimiter.** The prompt is `context + delimiter` and the continuation the choice text (for a schema
  task, each context option + delimiter, then the shared continuation). A whitespace-only delimiter is
  left out where the context already ends in whitespace or the continuation starts with it (LAMBADA's
  context + " " + word, the arithmetic file's " 1598" continuations); a delimiter starting with a
  newline does not double a newline the context ends with.
- **Tokenisation** (lm-evaluation-harness's `TemplateLM._encode_pair`): the prompt's trailing whitespace
  moves to the start of the continuation ("Answer:" + " Paris", never "Answer: " + "Paris"), then
  `context_ids = encode(prompt)` and `continuation_ids = encode(prompt + continuation)[len(context_ids):]`.
  So a BPE that merges a space with the next word scores " Paris" as it would meet it in running text,
  and every choice of a question has the same context ids, which the engine runs once. An empty prompt
  is scored from the end-of-text token.
- **Few-shot.** `num_fewshot` K examples are drawn, deterministically from (seed, the example's index),
  each written with its gold answer (`context + delimiter + gold`), joined and followed by
  `fewshot_delimiter` ("\n\n"), then the example. They come from the task's own file (the whole file even
  when `limit` scores only the first N examples), or from `fewshot_path` (e.g. the train split, where
  lm-evaluation-harness draws them from). Never drawn: the example itself, and every example with the same
  question: the same context (multiple choice, language modelling) or, for a schema task, the same
  context options or the same continuation (WinoGrande's twins share one of them and have opposite
  answers; llm-foundry files hold near-duplicate rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pretrainlab.errors import ConfigError
from pretrainlab.eval.tasks.examples import Continuation, Example, MultipleChoice, Schema


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Prompting:
    """How examples become prompts: see the module docstring."""

    delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    seed: int = 1234
    limit: int | None = None

    def n_scored(self, n_examples: int) -> int:
        """How many of a task's `n_examples` are scored: the first `limit` (all when unset)."""
        return n_examples if self.limit is None else min(n_examples, self.limit)


def attach(context: str, delimiter: str, continuation: str) -> str:
    """The prompt `context + delimiter`, with the delimiter trimmed as the module docstring says."""
    if not context:
        return ""
    if not delimiter.strip():
        if context[-1].isspace() or continuation[:1].isspace():
            delimiter = ""
    elif delimiter.startswith("\n") and context.endswith("\n"):
        delimiter = delimiter[1:]
    return context + delimiter


def encode_pair(tokenizer: Tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness tokenises a loglikelihood request."""
    n_spaces = len(prompt) - len(prompt.rstrip())
    if n_spaces:
        continuation = prompt[-n_spaces:] + continuation
        prompt = prompt[:-n_spaces]
    if not prompt:
        return [], list(tokenizer.encode(continuation))
    context_ids = list(tokenizer.encode(prompt))
    whole = list(tokenizer.encode(prompt + continuation))
    return context_ids, whole[len(context_ids) :]


def gold_text(example: Example, delimiter: str) -> str:
    """A solved example as a few-shot demonstration: its context, the delimiter and its right answer."""
    if isinstance(example, MultipleChoice):
        answer = example.choices[example.gold]
        return attach(example.context, delimiter, answer) + answer
    if isinstance(example, Schema):
        return attach(example.contexts[example.gold], delimiter, example.continuation) + example.continuation
    if isinstance(example, Continuation):
        return attach(example.context, delimiter, example.continuation) + example.continuation
    raise TypeError(f"{type(example).__name__} examples take no few-shot demonstrations")


def shot_keys(example: Example) -> tuple[tuple[str, Any], ...]:
    """What makes two examples the same question: a shot sharing any key with the scored example is not drawn."""
    if isinstance(example, (MultipleChoice, Continuation)):
        return (("context", example.context),) if example.context.strip() else ()
    if isinstance(example, Schema):
        return (("options", example.contexts), ("continuation", example.continuation))
    return ()


def fewshot_prefixes(
    examples: Sequence[Example],
    n_scored: int,
    prompting: Prompting,
    task: str,
    shots: Sequence[Example] | None = None,
) -> list[str]:
    """The few-shot prefix of each of the first `n_scored` examples ("" when num_fewshot is 0).

    Shots come from `shots` (a `fewshot_path` file) or else from `examples` themselves; never the scored
    example, nor one with the same question (`shot_keys`).
    """
    k = prompting.num_fewshot
    if k == 0:
        return [""] * n_scored
    same_file = shots is None
    pool = examples if shots is None else shots
    if same_file and k > len(pool) - 1:
        raise ConfigError(
            f"task {task!r}: num_fewshot={k} needs at least {k + 1} examples, the file has {len(pool)}",
            hint="lower num_fewshot (--num-fewshot), use a larger file, or draw the shots from another file "
            "(the task option fewshot_path)",
        )
    by_key: dict[tuple[str, Any], list[int]] = {}
    for j, ex in enumerate(pool):
        for key in shot_keys(ex):
            by_key.setdefault(key, []).append(j)
    sep = prompting.fewshot_delimiter
    out = []
    for i in range(n_scored):
        excluded = {j for key in shot_keys(examples[i]) for j in by_key.get(key, ())}
        if same_file:
            excluded.add(i)
        allowed = len(pool) - len(excluded)
        if allowed < k:
            where = examples[i].where or f"example {i + 1}"
            raise ConfigError(
                f"task {task!r}: num_fewshot={k} needs {k} shot{'s' if k > 1 else ''} other than the example at "
                f"{where} and its duplicates (same question), but only {allowed} of the {len(pool)} "
                f"{'examples' if same_file else 'few-shot examples'} differ from it",
                hint="lower num_fewshot, or draw the shots from a larger file (the task option fewshot_path)",
            )
        rng = np.random.default_rng([prompting.seed, i])
        # k + |excluded| distinct draws hold at least k allowed ones; their order is random
        draws = rng.choice(len(pool), size=min(len(pool), k + len(excluded)), replace=False)
        picks = [int(j) for j in draws if int(j) not in excluded][:k]
        out.append(sep.join(gold_text(pool[j], prompting.delimiter) for j in picks) + sep)
    return out


def prompting_from(
    options: dict[str, Any], *, num_fewshot: int, limit: int | None, seed: int, task: str = "task"
) -> Prompting:
    """A task's Prompting: its options (`delimiter`, `fewshot_delimiter`, `num_fewshot`, `limit`, `seed`)
    over the run-wide `num_fewshot`, `limit` and `seed`; a bad value is a ConfigError naming its field
    (`tasks.<task>.limit` for a task's own option, `limit` for the run-wide one)."""

    def pick(name: str, default: int | None, minimum: int | None) -> Any:
        field, value = (f"tasks.{task}.{name}", options[name]) if name in options else (name, default)
        return None if value is None and name == "limit" else check_count(value, field, minimum=minimum)

    return Prompting(
        delimiter=str(options.get("delimiter", " ")),
        fewshot_delimiter=str(options.get("fewshot_delimiter", "\n\n")),
        num_fewshot=pick("num_fewshot", num_fewshot, 0),
        seed=pick("seed", seed, None),
        limit=pick("limit", limit, 1),
    )


def check_count(value: Any, field: str, *, minimum: int | None) -> int:
    """`value` as an int of at least `minimum` (any int when None); a ConfigError naming `field` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise ConfigError(f"{field} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        what = {0: "0 or more", 1: "1 or more"}.get(minimum, f"at least {minimum}")
        hint = "leave it out to score every example" if field.endswith("limit") else None
        raise ConfigError(f"{field} must be {what}, got {value}", hint=hint)
    return value
