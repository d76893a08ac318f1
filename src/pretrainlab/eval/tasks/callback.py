"""`task_eval`: score the run's downstream tasks at every evaluation, into the evaluation line.

On when the config names tasks (`tasks: {tasks: {arc_easy: data/arc_easy.jsonl}, num_fewshot: 0,
limit: 500}`); no need to list it under `callbacks`. The task files are read and tokenised once, at train
start, and every request is checked against the model's window, so a missing or malformed file, a bad
option or a continuation too long to score stops the run before its first step, naming the task and the
line. At each evaluation (`eval.every`, and the final one) the scores are added to the evaluation record as
`task/<name>/<metric>` before the trainer writes it to metrics.jsonl (the final `{"event": "end"}` line
carries them too).

Scoring runs on the main process with the plain (unwrapped) model; the other processes of a DDP run wait
for it at their next step. A scoring failure (e.g. out of memory) is caught: the error is printed and the
run stops after the current step with a checkpoint and exit code 1, on every process alike (the trainer
shares a stop request across processes), instead of leaving the other processes waiting forever. A run
with parallel=fsdp is refused (its model is sharded across processes): evaluate its checkpoints with
`pretrainlab eval RUN --tasks ...`.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from pretrainlab.errors import ConfigError, PretrainlabError
from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

FAILED_EXIT_CODE = 1


@register_callback("task_eval")
class TaskEvalCallback(Callback):
    """Adds `task/<name>/<metric>` to every evaluation record, the tasks taken from `cfg.tasks`."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []
        self.engine: Any = None
        self.failed: str | None = None  # the error of a failed scoring; no further scoring after it

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
        # every process reads and checks the files, so a bad task fails on every process alike
        specs = resolve_tasks(cfg.tasks)
        engine = Engine(trainer.module, trainer.data.eot_id, trainer.device, trainer.autocast_dtype)
        self.tasks = load_tasks(specs, trainer.data.tokenizer, num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                seed=cfg.seed, window=engine.window)
        self.engine = engine

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if not self.tasks or not trainer.is_main or self.failed is not None:
            return
        from pretrainlab.eval.tasks.evaluate import metrics_by_task, score_tasks

        start = time.perf_counter()
        try:
            results = score_tasks(self.tasks, self.engine)
        except Exception as e:  # noqa: BLE001 -- any failure must stop every process, not hang them
            self._fail(trainer, e)
            return
        metrics.update(results)
        if trainer.progress is not None:
            summary = "  ".join(
                f"{name} " + " ".join(f"{k} {v:.4f}" for k, v in vals.items() if k in ("acc", "acc_norm", "ppl", "bpb"))
                for name, vals in metrics_by_task(results).items()
            )
            trainer.progress.message(f"tasks step {trainer.step} ({time.perf_counter() - start:.1f} s): {summary}")

    def on_train_end(self, trainer: Trainer) -> None:
        # A failure at the final evaluation comes after the loop has stopped taking stop requests.
        if self.failed is not None and trainer.exit_code == 0:
            trainer.exit_code = FAILED_EXIT_CODE

    def _fail(self, trainer: Trainer, error: Exception) -> None:
        what = str(error) if isinstance(error, PretrainlabError) else f"{type(error).__name__}: {error}"
        self.failed = what
        message = (
            f"error: task evaluation failed at step {trainer.step}: {what}\n"
            "  the run stops after this step with a checkpoint (exit code 1); fix the cause, then continue with "
            "`pretrainlab train <config> --resume` (or remove `tasks` from the config to train without them)"
        )
        if trainer.progress is not None:
            trainer.progress.message(message)
        else:
            print(message, file=sys.stderr, flush=True)
        trainer.request_stop("task evaluation failed", checkpoint=True, exit_code=FAILED_EXIT_CODE)
