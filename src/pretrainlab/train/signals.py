"""Graceful shutdown on SIGTERM / SIGINT: finish the step, write a checkpoint, exit 128 + signal.

Clusters (Slurm, Kubernetes) send SIGTERM some time before killing a job; this callback turns it
into a clean stop with a checkpoint to `--resume` from (the exit code is 143 for SIGTERM and 130 for
SIGINT, the shell convention). A second SIGINT while stopping raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from pretrainlab.train.callbacks import Callback, register_callback

if TYPE_CHECKING:
    from pretrainlab.train.trainer import Trainer

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@register_callback("sigterm")
class SigtermCallback(Callback):
    """Installs handlers for SIGTERM and SIGINT for the duration of `fit` (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def on_train_start(self, trainer: Trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.received is not None:
            name = signal.Signals(self.received).name
            trainer.request_stop(f"received {name}", checkpoint=True, exit_code=128 + self.received)

    def on_train_end(self, trainer: Trainer) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
