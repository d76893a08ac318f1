"""TensorBoard: scalars in `<run>/tensorboard` (option `log_dir`; a relative one is inside the run folder),
through torch's SummaryWriter.

On `--resume` the writer starts with `purge_step` = the checkpoint's step + 1: TensorBoard then hides the
events a crashed session logged past the checkpoint, as metrics.jsonl drops those lines, so a resumed
run's charts show each step once. The end line becomes a text table `end` (Text tab).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.train.trackers.base import Status, Tracker, TrackerContext, register_tracker


@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    extra = "tensorboard"

    def __init__(
        self, ctx: TrackerContext, log_dir: str | None = None, flush_secs: int = 10, **writer_options: Any
    ) -> None:
        super().__init__(ctx)
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        # relative to the run folder, not the current one: a resume from elsewhere writes to the same place
        self.log_dir = ctx.run_dir / Path(log_dir).expanduser() if log_dir is not None else ctx.run_dir / "tensorboard"
        purge_step = ctx.start_step + 1 if ctx.resume else None
        self.writer = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=flush_secs, **writer_options
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_summary(self, summary: dict[str, float], step: int) -> None:
        rows = "\n".join(f"| {k} | {v:.6g} |" for k, v in summary.items())
        self.writer.add_text("end", f"| metric | value |\n|---|---|\n{rows}", global_step=step)

    def close(self, status: Status) -> None:
        self.writer.close()
