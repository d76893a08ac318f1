"""Fixtures of the task tests: a tiny byte-level model and the byte tokenizer."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.config import ModelConfig
from pretrainlab.data.tokenizer import TextTokenizer
from pretrainlab.model import build_model, resolve_model_config
from pretrainlab.model.decoder import Decoder

from .task_helpers import SEQ


@pytest.fixture(scope="module")
def model() -> Decoder:
    """2 layers x 32, byte vocabulary, 64-token window; init_std 0.3 so predictions are far from uniform."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, init_std=0.3)
    return build_model(resolve_model_config(cfg, vocab_size=258, seq_len=SEQ)).eval()


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.bytes()
