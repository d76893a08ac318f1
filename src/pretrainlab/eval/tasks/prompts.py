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
- **Few-shot.** `num_fewshot` K examples are drawn from the same file (never the example itself),
  deterministically from (seed, the example's index), each written with its gold answer
  (`context + delimiter + gold`), joined and followed by `fewshot_delimiter` ("\n\n"), then the example.
  The shots come from the whole file even when `limit` scores only the first N examples.
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


def fewshot_prefixes(examples: Sequence[Example], n_scored: int, prompting: Prompting, task: str) -> list[str]:
    """The few-shot prefix of each of the first `n_scored` examples ("" when num_fewshot is 0)."""
    k = prompting.num_fewshot
    if k == 0:
        return [""] * n_scored
    if k > len(examples) - 1:
        raise ConfigError(
            f"task {task!r}: num_fewshot={k} needs at least {k + 1} examples, the file has {len(examples)}",
            hint="lower num_fewshot (--num-fewshot) or use a larger file",
        )
    sep = prompting.fewshot_delimiter
    out = []
    for i in range(n_scored):
        rng = np.random.default_rng([prompting.seed, i])
        picks = rng.choice(len(examples) - 1, size=k, replace=False)
        shots = [examples[int(j) + int(j >= i)] for j in picks]  # skip the example itself
        out.append(sep.join(gold_text(s, prompting.delimiter) for s in shots) + sep)
    return out


def prompting_from(options: dict[str, Any], *, num_fewshot: int, limit: int | None, seed: int) -> Prompting:
    """A task's Prompting: its options (`delimiter`, `fewshot_delimiter`, `num_fewshot`, `limit`) over the
    run-wide `num_fewshot`, `limit` and `seed`."""
    return Prompting(
        delimiter=str(options.get("delimiter", " ")),
        fewshot_delimiter=str(options.get("fewshot_delimiter", "\n\n")),
        num_fewshot=int(options.get("num_fewshot", num_fewshot)),
        seed=int(options.get("seed", seed)),
        limit=options.get("limit", limit),
    )
