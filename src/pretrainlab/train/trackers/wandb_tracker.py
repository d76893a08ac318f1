"""Weights & Biases: one W&B run per pretrainlab run, resumed by `--resume`.

Options are `wandb.init` keyword arguments (`mode`, `project`, `entity`, `group`, `tags`, `notes`, `dir`,
`settings`, ...). Defaults: project `pretrainlab`, name = the run's name, config = the resolved run config,
dir = the run folder (W&B writes `<run>/wandb/`). `mode: offline` needs no network and no account; upload
later with `wandb sync <run>/wandb/offline-run-*`.

The run id is kept in `<run>/trackers.json`; `--resume` reopens that id (`resume="allow"`). W&B only
accepts increasing steps, so after a resume the steps it already holds (those between the checkpoint and
the interruption) keep their first values and later ones are added.
"""

from __future__ import annotations

from typing import Any

from pretrainlab.train.trackers.base import Status, Tracker, TrackerContext, register_tracker


@register_tracker("wandb")
class WandbTracker(Tracker):
    extra = "wandb"

    def __init__(self, ctx: TrackerContext, **init_options: Any) -> None:
        super().__init__(ctx)
        import wandb  # ImportError without the wandb package

        options: dict[str, Any] = {
            "project": "pretrainlab",
            "name": ctx.run_name,
            "config": ctx.config,
            "dir": str(ctx.run_dir),
        }
        options.update(init_options)
        run_id = options.pop("id", None) or (ctx.state.get("id") if ctx.resume else None)  # None: W&B picks one
        if isinstance(options.get("settings"), dict):
            options["settings"] = wandb.Settings(**options["settings"])
        if ctx.resume:
            options.setdefault("resume", "allow")
        self.run = wandb.init(id=run_id, **options)
        self.state = {"id": self.run.id}
        self._first_step = int(getattr(self.run, "step", 0) or 0)  # a resumed online run: steps W&B holds

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step < self._first_step:
            return
        self.run.log(metrics, step=step)

    def log_summary(self, summary: dict[str, float], step: int) -> None:
        self.run.summary.update(summary)

    def close(self, status: Status) -> None:
        self.run.finish(exit_code=1 if status == "failed" else 0)
