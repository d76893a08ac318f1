"""`reinit_embeddings`: stage 2 of procedural pretraining starts from the warm-up's layers with freshly
drawn token embeddings, seeded by the run, and a resumed run keeps the embedding it trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_run_config, train_run
from pretrainlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    return load_file(str(newest / "model.safetensors"))


def test_stage_two_redraws_only_the_embedding(tmp_path: Path, tiny_prepared: Path) -> None:
    warm = train_run(tiny_run_config(tmp_path, tiny_prepared, name="warm", train={"steps": 3}))
    reinit = [{"name": "reinit_embeddings"}]
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = tiny_run_config(tmp_path, tiny_prepared, name=name, seed=seed, init_from=str(warm), callbacks=reinit,
                              optim={"lr": 1e-9}, schedule={"warmup_steps": 0}, train={"steps": 1})
        runs[name] = _weights(train_run(cfg))
    before = _weights(warm)
    emb = "embed.weight"
    assert not torch.equal(runs["a"][emb], before[emb])
    assert torch.equal(runs["a"][emb], runs["b"][emb]) and not torch.equal(runs["a"][emb], runs["c"][emb])
    assert abs(float(runs["a"][emb].std()) - 0.02) < 0.003  # the model's own init, N(0, init_std)
    others = [k for k in before if k != emb]
    # lr ~0: every other weight is the warm-up's
    assert others and all(torch.allclose(runs["a"][k], before[k], atol=1e-6) for k in others)


def test_options_are_checked(tmp_path: Path, tiny_prepared: Path) -> None:
    cfg = tiny_run_config(tmp_path, tiny_prepared, callbacks=[{"name": "reinit_embeddings", "options": {"head": 1}}])
    with pytest.raises(ConfigError, match="head=1 must be true or false"):
        train_run(cfg)


def test_a_resumed_run_keeps_its_embedding() -> None:
    from types import SimpleNamespace

    from pretrainlab.recipes.procedural_warmup import ReinitEmbeddings

    embed = torch.nn.Embedding(4, 3)
    before = embed.weight.detach().clone()
    module = SimpleNamespace(embed=embed, head=None, cfg=SimpleNamespace(init_std=0.02))
    cfg = SimpleNamespace(seed=0, parallel="none")
    ReinitEmbeddings().on_train_start(SimpleNamespace(step=5, module=module, cfg=cfg))  # resumed at step 5
    assert torch.equal(embed.weight, before)
    ReinitEmbeddings().on_train_start(SimpleNamespace(step=0, module=module, cfg=cfg, _say=lambda t: None))
    assert not torch.equal(embed.weight, before)
