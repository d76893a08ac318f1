"""Downstream task evaluation: local task files -> log-likelihood scorers -> `task/<name>/<metric>`.

- `formats.py`: readers of the layouts people have (llm-foundry ICL jsonl, HellaSwag, PIQA, ARC, BLiMP,
  plain text) and detection of a file's layout;
- `registry.py`: task names -> layouts, scorer and default options; specs from configs and `--tasks`;
- `prompts.py`: delimiters, few-shot prefixes and tokenisation (as lm-evaluation-harness does them);
- `scorers.py`: accuracy, length-normalised accuracy, greedy exact match, perplexity, bits per byte;
- `evaluate.py`: `evaluate_tasks` / `load_tasks` + `score_tasks`, and the result table;
- `callback.py`: the `task_eval` training callback; `cli.py`: `pretrainlab eval RUN --tasks ...`.

See docs/evaluation.md.
"""

from pretrainlab.eval.tasks.evaluate import (
    LoadedTask,
    evaluate_tasks,
    load_tasks,
    metrics_by_task,
    print_task_table,
    score_tasks,
)
from pretrainlab.eval.tasks.formats import FORMATS, Format, detect_format
from pretrainlab.eval.tasks.prompts import Prompting, encode_pair
from pretrainlab.eval.tasks.registry import TASKS, TaskDef, TaskSpec, parse_task_args, resolve_tasks
from pretrainlab.eval.tasks.scorers import SCORERS, Engine, Scorer
from pretrainlab.eval.tasks import synthetic  # noqa: F401,E402  (registers the generated tasks)

__all__ = [
    "FORMATS",
    "SCORERS",
    "TASKS",
    "Engine",
    "Format",
    "LoadedTask",
    "Prompting",
    "Scorer",
    "TaskDef",
    "TaskSpec",
    "detect_format",
    "encode_pair",
    "evaluate_tasks",
    "load_tasks",
    "metrics_by_task",
    "parse_task_args",
    "print_task_table",
    "resolve_tasks",
    "score_tasks",
]
