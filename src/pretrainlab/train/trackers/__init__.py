"""Experiment trackers: TensorBoard, Weights & Biases and MLflow receive every line metrics.jsonl gets.

Chosen in the run config (`trackers: [tensorboard, {name: wandb, options: {mode: offline}}]`); each is an
optional extra, and one that cannot start or fails mid-run costs a warning, never the run. Add your own
with `@register_tracker("name")` on a `Tracker` subclass (see base.py). docs/trackers.md has the details.
"""

from pretrainlab.train.trackers.base import (
    TRACKERS,
    Status,
    Tracker,
    TrackerContext,
    flatten_config,
    numeric_items,
    register_tracker,
)
from pretrainlab.train.trackers.tracker_set import STATE_FILE, TrackerSet, check_trackers, start_trackers

__all__ = [
    "STATE_FILE",
    "TRACKERS",
    "Status",
    "Tracker",
    "TrackerContext",
    "TrackerSet",
    "check_trackers",
    "flatten_config",
    "numeric_items",
    "register_tracker",
    "start_trackers",
]
