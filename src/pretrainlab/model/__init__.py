"""The decoder model, its component registries, sizes and FLOPs accounting."""

from pretrainlab.model.decoder import Block, Decoder, build_model
from pretrainlab.model.flops import count_parameters, flops_per_token, matmul_params, mfu, peak_flops
from pretrainlab.model.presets import PRESETS
from pretrainlab.model.registries import ATTENTIONS, LINEARS, MLPS, NORMS
from pretrainlab.model.resolve import resolve_model_config

__all__ = [
    "ATTENTIONS",
    "Block",
    "Decoder",
    "LINEARS",
    "MLPS",
    "NORMS",
    "PRESETS",
    "build_model",
    "count_parameters",
    "flops_per_token",
    "matmul_params",
    "mfu",
    "peak_flops",
    "resolve_model_config",
]
