"""Optimisers (a registry of builders over weight-decay parameter groups) and learning-rate schedules."""

from pretrainlab.optim.param_groups import param_groups
from pretrainlab.optim.registry import OPTIMIZERS, build_optimizer, check_optimizer, register_optimizer
from pretrainlab.optim.schedules import SCHEDULES, build_schedule, check_schedule, register_schedule

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_schedule",
    "check_optimizer",
    "check_schedule",
    "param_groups",
    "register_optimizer",
    "register_schedule",
]
