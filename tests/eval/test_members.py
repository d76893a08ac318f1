"""`load_members`: members are compared through their own prepared data; a member whose data folder is
gone is compared by its embedding size, and the error says that is all that could be checked."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_prepared, random_docs, tiny_run_config

from pretrainlab.errors import DataError
from pretrainlab.eval.members import load_members


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny two-step runs: `a` (byte tokenizer), `twin` (the same tokenizer, its data deleted after training),
    `wide` (a 300-token vocabulary, its data deleted), `swapped` (end-of-text and padding ids swapped)."""
    from pretrainlab.train.trainer import Trainer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("members")
    rng = np.random.default_rng(0)
    docs = {"alpha": random_docs(rng, 40)}
    data = {
        "a": make_prepared(tmp / "data_a", train=docs, val=docs),
        "twin": make_prepared(tmp / "data_twin", train=docs, val=docs),
        "wide": make_prepared(tmp / "data_wide", train=docs, val=docs, vocab_size=300),
        "swapped": make_prepared(tmp / "data_swapped", train=docs, val=docs, eot_id=257, pad_id=256),
    }
    out = {}
    for name, path in data.items():
        model = {"vocab_size": 300} if name == "wide" else {}
        cfg = tiny_run_config(tmp / "runs", path, name=name, model={"n_layers": 1, "d_model": 32, "n_heads": 2,
                              **model}, train={"steps": 2, "checkpoint_every": None}, eval={"every": None})
        Trainer(cfg).fit()
        out[name] = tmp / "runs" / name
    shutil.rmtree(data["twin"])
    shutil.rmtree(data["wide"])
    out["data_a"], out["data_swapped"] = data["a"], data["swapped"]
    torch.set_num_threads(before)
    return out


def test_members_of_one_tokenizer_load_even_when_a_members_data_is_gone(runs) -> None:
    models, configs, shared = load_members([runs["a"], runs["twin"]], data=runs["data_a"])
    assert len(models) == 2 and shared.path == runs["data_a"]
    assert all(not p.requires_grad for m in models for p in m.parameters())


def test_members_compare_their_own_tokenizers(runs) -> None:
    with pytest.raises(DataError, match=r"ensemble member .*swapped was trained with a different tokenizer .*eot_id"):
        load_members([runs["a"], runs["swapped"]])


def test_a_member_without_its_data_is_compared_by_embedding_size_and_the_error_says_so(runs) -> None:
    # The shared data's vocabulary (258) fits the wide member's 300-row embedding, so only the comparison
    # between members can tell that the two were trained with different tokenizers.
    with pytest.raises(DataError, match=r"embeds 300 tokens but .*a embeds 258") as err:
        load_members([runs["a"], runs["wide"]], data=runs["data_a"])
    assert "data_wide" in err.value.message and "only be checked by its embedding size" in err.value.message
    with pytest.raises(DataError, match="only be checked by its embedding size"):
        load_members([runs["wide"], runs["a"]], data=runs["data_a"])
