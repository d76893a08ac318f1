"""Shared fixtures: tiny corpora and prepared folders made in milliseconds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_prepared, random_docs  # noqa: E402


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    """Two domains of random byte documents with a validation split (byte tokenizer, vocab 258)."""
    rng = np.random.default_rng(0)
    return make_prepared(
        tmp_path / "prepared",
        train={"alpha": random_docs(rng, 200), "beta": random_docs(rng, 100, 50, 400)},
        val={"alpha": random_docs(rng, 20), "beta": random_docs(rng, 10, 50, 400)},
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is fastest, and the test machine is shared. Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")` in a module of tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
