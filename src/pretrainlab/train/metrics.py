"""Run metrics: the metrics.jsonl writer, a throughput/MFU meter, and the console progress display.

metrics.jsonl holds one JSON object per line (see /work/shared/design.md): train lines, evaluation
lines and a final `{"event": "end", ...}` line. Each line is flushed as written, so a killed run
keeps every line it logged. On resume the lines past the checkpoint's step (and any end line) are
dropped first, so a resumed run's file has the same lines as an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pretrainlab.io_atomic import strict_json


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics.jsonl (a torn last line from a killed run is ignored)."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsWriter:
    """Appends JSON lines to `path`; `truncate_after(step)` first keeps only lines up to that step.

    `sinks` (e.g. the experiment trackers, train/trackers/) get every record written, after its line is
    flushed, and are closed by `close()`; each has `log(record)` and `close()`.
    """

    def __init__(self, path: str | Path, sinks: list[Any] | None = None) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self.sinks: list[Any] = list(sinks or [])

    def truncate_after(self, step: int) -> None:
        """Keep the lines with `step <= step` that are not end lines (atomically rewritten)."""
        kept = [r for r in read_metrics(self.path) if r.get("event") != "end" and int(r.get("step", 0)) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(strict_json(record)) + "\n")
        self._file.flush()
        for sink in self.sinks:
            sink.log(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for sink in self.sinks:
            sink.close()


class ThroughputMeter:
    """Tokens per second over the steps since the last `rate()` call, and model FLOPs utilisation.

    MFU = achieved model FLOPs / peak FLOPs (PaLM, arXiv:2204.02311, appendix B), with
    `flops_per_token` the training (forward + backward) FLOPs of one token and `peak_flops` the
    device's peak for the compute dtype, summed over all processes; None when the peak is unknown.
    """

    def __init__(self, flops_per_token: float, peak_flops: float | None) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._tokens = 0
        self._start = time.perf_counter()

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    def restart(self) -> None:
        """Forget time spent outside training steps (evaluation, checkpoints)."""
        self._tokens = 0
        self._start = time.perf_counter()

    def rate(self) -> tuple[float, float | None]:
        """(tokens/s, MFU) since the last call; the window starts again."""
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        tps = self._tokens / elapsed
        self._tokens = 0
        self._start = now
        mfu = None if not self.peak_flops else tps * self.flops_per_token / self.peak_flops
        return tps, mfu


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressDisplay:
    """A rich progress bar (step, loss, LR, tokens/s, MFU, ETA) on a terminal; plain log lines otherwise.

    `enabled=False` (train.progress=false, a non-main rank) or a non-TTY stdout gives one line per
    `update` call, which the trainer makes every `train.log_every` steps.
    """

    def __init__(self, total_steps: int, *, enabled: bool, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = total_steps
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._bar = None
        self._task = None
        if enabled and not quiet and self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                refresh_per_second=4,
            )

    def start(self, step: int) -> None:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("train", total=self.total, completed=step, info="")

    def update(self, step: int, metrics: dict[str, Any], *, log_line: bool) -> None:
        """Advance the bar to `step`; print a plain line instead when there is no bar and `log_line`."""
        info = (
            f"loss {_fmt(metrics.get('loss'))}  lr {_fmt(metrics.get('lr'))}  "
            f"tok/s {_fmt(round(metrics['tokens_per_s']) if metrics.get('tokens_per_s') else None)}  "
            f"mfu {_fmt(metrics.get('mfu'))}"
        )
        if self._bar is not None and self._task is not None:
            if log_line:  # throughput is measured per logging window: keep the last figures in between
                self._bar.update(self._task, completed=step, info=info)
            else:
                self._bar.update(self._task, completed=step)
        elif log_line and not self.quiet:
            print(f"step {step}/{self.total}  {info}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
