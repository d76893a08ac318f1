"""Training objectives (registry `objective`): each scores a model on a Batch and returns its loss."""

from pretrainlab.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, build_objective, unwrap
from pretrainlab.objectives.fused_ce import fused_linear_cross_entropy
from pretrainlab.objectives.next_token import NextToken

__all__ = [
    "OBJECTIVES",
    "NextToken",
    "Objective",
    "ObjectiveOutput",
    "build_objective",
    "fused_linear_cross_entropy",
    "unwrap",
]
