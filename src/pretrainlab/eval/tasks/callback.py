"""`task_eval`: score the run's downstream tasks at every evaluation, into the evaluation line.

On when the config names tasks (`tasks: {tasks: {arc_easy: data/arc_easy.jsonl}, num_fewshot: 0,
limit: 500}`); no need to list it under `callbacks`. The task files are read and tokenised once, at train
start, so a missing or malformed file stops the run before its first step, naming the task and the line.
At each evaluation (`eval.every`) the scores are added to the evaluation record as
`task/<name>/<metric>` before the trainer writes it to metrics.jsonl.

Scoring runs on the main process with the plain (unwrapped) model; the other processes of a DDP run wait
for it at their next step. A run with parallel=fsdp is refused (its model is sharded across processes):
evaluate its checkpoints with `pretrainlab eval RUN --tasks ...`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pretrainlab.errors import ConfigError
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer


@register_callback("task_eval")
class TaskEvalCallback(Callback):
    """Adds `task/<name>/<metric>` to every evaluation record, the tasks taken from `cfg.tasks`."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []
        self.engine: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        from pretrainlab.eval.tasks.evaluate import load_tasks
        from pretrainlab.eval.tasks.registry import resolve_tasks
        from pretrainlab.eval.tasks.scorers import Engine

        cfg = trainer.cfg.tasks
        if not cfg.tasks:
            return
        if trainer.cfg.parallel == "fsdp":
            raise ConfigError(
                "tasks: task evaluation during training is not supported with parallel=fsdp",
                hint="remove tasks.tasks and evaluate the checkpoints with `pretrainlab eval RUN --tasks ...`",
            )
        specs = resolve_tasks(cfg.tasks)  # every process checks the files, so every process fails alike
        self.tasks = load_tasks(specs, trainer.data.tokenizer, num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                seed=cfg.seed)
        self.engine = Engine(trainer.module, trainer.data.eot_id, trainer.device, trainer.autocast_dtype)

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if not self.tasks or not trainer.is_main:
            return
        from pretrainlab.eval.tasks.evaluate import metrics_by_task, score_tasks

        start = time.perf_counter()
        results = score_tasks(self.tasks, self.engine)
        metrics.update(results)
        if trainer.progress is not None:
            summary = "  ".join(
                f"{name} " + " ".join(f"{k} {v:.4f}" for k, v in vals.items() if k in ("acc", "acc_norm", "ppl", "bpb"))
                for name, vals in metrics_by_task(results).items()
            )
            trainer.progress.message(f"tasks step {trainer.step} ({time.perf_counter() - start:.1f} s): {summary}")
