"""init_from across parameterisations (issue 6): a dense run converted into a low-rank run by truncated SVD
(PELA) starts at the dense loss at full rank; a masked run's weights load into a dense run with the mask
dropped (SPDF: masked entries start at exactly 0 and train); `init_optimizer` continues the source's AdamW
moments where names and shapes match, or they start fresh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.config import ModelConfig
from pretrainlab.errors import ConfigError
from pretrainlab.eval.evaluate import evaluate
from pretrainlab.eval.load import load_run
from pretrainlab.model.surgery import projections
from pretrainlab.train.callbacks import Callback
from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {"n_layers": 2, "d_model": 32, "n_heads": 2}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("init_recipes")
    rng = np.random.default_rng(0)
    data = make_prepared(root / "prepared", train={"a": markov_docs(rng, 40)}, val={"a": markov_docs(rng, 4)})
    common = {"train": {"steps": 6}, "optim": {"lr": 1e-2}, "eval": {"every": None}}
    dense = train_run(tiny_run_config(root / "runs", data, name="dense", model=MODEL, **common))
    masked = train_run(tiny_run_config(root / "runs", data, name="masked", **common,
                                       model={**MODEL, "linear": "masked", "linear_options": {"sparsity": 0.75}}))
    return {"root": root, "data": data, "dense": dense, "masked": masked}


def _cfg(tmp: Path, sources, init_from: str, name: str, model: dict | None = None, **sections):
    cfg = tiny_run_config(tmp, sources["data"], name=name, **sections)
    return cfg.model_copy(update={"model": ModelConfig.model_validate(model or {}),
                                  "init_from": str(sources[init_from])})


def _val_loss(model: torch.nn.Module, data: Path) -> float:
    from pretrainlab.data.prepared import PreparedData

    return evaluate(model, PreparedData(data), seq_len=32, max_tokens_per_domain=512, batch_size=8,
                    device=torch.device("cpu"), autocast_dtype=None)["val_loss"]


# ---------------------------------------------------------------------- PELA: dense -> low rank


def test_svd_init_at_full_rank_starts_at_the_dense_loss(sources, tmp_path, capsys):
    dense_loss = _val_loss(load_run(sources["dense"])[0], sources["data"])
    full = Trainer(_cfg(tmp_path, sources, "dense", "full",
                        model={"linear": "low_rank", "linear_options": {"rank_fraction": 1.0, "alpha": 4}}))
    out = capsys.readouterr().out
    assert "model.linear 'dense' -> 'low_rank': 8 projections converted" in out
    assert full.model_cfg.linear == "low_rank" and full.model_cfg.d_model == 32  # the shape from the source
    full_loss = _val_loss(full.module, sources["data"])
    cut = Trainer(_cfg(tmp_path, sources, "dense", "cut", model={"linear": "low_rank",
                                                                 "linear_options": {"rank": 4}}))
    cut_loss = _val_loss(cut.module, sources["data"])
    print(f"val_loss dense {dense_loss:.6f}, SVD full rank {full_loss:.6f}, rank 4 {cut_loss:.6f}")
    assert abs(full_loss - dense_loss) < 1e-5
    assert abs(cut_loss - dense_loss) > 1e-4  # rank 4 of 32 computes something else (6 steps: not yet worse)
    cut.fit()  # and the converted run trains; config.yaml records the target's parameterisation
    _, saved, *_ = load_run(tmp_path / "cut")
    assert saved.model.linear == "low_rank" and saved.model.linear_options == {"rank": 4}


# ---------------------------------------------------------------------- SPDF: masked -> dense


def test_spdf_mask_dropped_masked_entries_start_at_zero_and_train(sources, tmp_path):
    ckpt = find_latest_checkpoint(sources["masked"])
    state, _ = load_checkpoint(ckpt)
    trainer = Trainer(_cfg(tmp_path, sources, "masked", "spdf", model={"linear": "dense"}, train={"steps": 3}))
    assert "masked_linear" not in [cb.name for cb in trainer.callbacks]
    assert not any(k.endswith(".mask") for k in trainer.module.state_dict())
    masks = {p: state[f"{p}.mask"] for p in projections(trainer.module)}
    for prefix, m in projections(trainer.module).items():
        assert type(m) is torch.nn.Linear
        assert torch.equal(m.weight[masks[prefix]], state[f"{prefix}.weight"][masks[prefix]])
        assert torch.count_nonzero(m.weight[~masks[prefix]]) == 0  # exactly 0 at the start
    assert _val_loss(trainer.module, sources["data"]) == pytest.approx(
        _val_loss(load_run(sources["masked"])[0], sources["data"]), abs=1e-5)
    trainer.fit()
    for prefix, m in projections(trainer.module).items():
        revived = float((m.weight[~masks[prefix]] != 0).float().mean())
        assert revived > 0.99, prefix  # the dropped mask's entries train


def test_masked_source_continues_masked_unless_told(sources, tmp_path):
    trainer = Trainer(_cfg(tmp_path, sources, "masked", "still_masked", train={"steps": 2}))
    assert trainer.model_cfg.linear == "masked" and trainer.model_cfg.linear_options == {"sparsity": 0.75}
    assert "masked_linear" in [cb.name for cb in trainer.callbacks]  # the filled linear's own callback
    state, _ = load_checkpoint(find_latest_checkpoint(sources["masked"]))
    assert all(torch.equal(trainer.module.state_dict()[k], v) for k, v in state.items())


def test_conversion_into_masked_is_refused_before_the_run_folder(sources, tmp_path):
    cfg = _cfg(tmp_path, sources, "dense", "to_masked", model={"linear": "masked"})
    with pytest.raises(ConfigError, match=r"model\.linear='masked': init_from does not convert"):
        Trainer(cfg)
    assert not (tmp_path / "to_masked").exists()


# ---------------------------------------------------------------------- init_optimizer: keep vs reset


class _Grads(Callback):
    name = "test_grads"

    def on_before_optimizer_step(self, trainer, info):
        self.lr = info.lr
        self.grads = {n: p.grad.detach().clone() for n, p in trainer.module.named_parameters()}
        return True


def _first_update(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], _Grads]:
    before = {n: p.detach().clone() for n, p in trainer.module.named_parameters()}
    spy = _Grads()
    trainer.callbacks.append(spy)
    trainer.fit()
    after = {n: p.detach().clone() for n, p in trainer.module.named_parameters()}
    return before, after, spy


def _adamw_reference(trainer: Trainer, before, spy: _Grads, state: dict[str, dict] | None) -> dict[str, torch.Tensor]:
    """One step of a fresh torch AdamW with the trainer's groups, from `state` (per name) or from scratch."""
    names = {id(p): n for n, p in trainer.module.named_parameters()}
    clones = {n: torch.nn.Parameter(t.clone()) for n, t in before.items()}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "lr": spy.lr,
               "params": [clones[names[id(p)]] for p in g["params"]]} for g in trainer.optimizer.param_groups]
    ref = torch.optim.AdamW(groups)
    for n, p in clones.items():
        p.grad = spy.grads[n]
        if state is not None and n in state:
            ref.state[p] = {k: v.clone() for k, v in state[n].items()}
    ref.step()
    return {n: p.detach() for n, p in clones.items()}


@pytest.mark.parametrize("keep", [True, False])
def test_init_optimizer_continues_the_source_moments_or_resets_them(sources, tmp_path, keep, capsys):
    _, ckpt_state = load_checkpoint(find_latest_checkpoint(sources["dense"]))
    source_state = ckpt_state["optimizer"]["state"]
    trainer = Trainer(_cfg(tmp_path, sources, "dense", f"keep_{keep}", init_optimizer=keep,
                           train={"steps": 1}, optim={"lr": 1e-2}, schedule={"name": "constant", "warmup_steps": 0}))
    if keep:
        assert "optimiser state of 14 of 14 parameters" in capsys.readouterr().out
        for n, p in trainer.module.named_parameters():
            got = trainer.optimizer.state[p]
            assert all(torch.equal(got[k].cpu(), source_state[n][k]) for k in ("exp_avg", "exp_avg_sq", "step"))
            assert float(got["step"]) == 6.0
    else:
        assert not trainer.optimizer.state
    before, after, spy = _first_update(trainer)
    continued = _adamw_reference(trainer, before, spy, source_state)
    fresh = _adamw_reference(trainer, before, spy, None)
    expected, other = (continued, fresh) if keep else (fresh, continued)
    for n in after:
        assert torch.allclose(after[n], expected[n], rtol=0, atol=1e-7), n
    assert max(float((after[n] - other[n]).abs().max()) for n in after) > 1e-4


def test_init_optimizer_into_a_converted_model_keeps_only_what_matches(sources, tmp_path, capsys):
    trainer = Trainer(_cfg(tmp_path, sources, "dense", "lr_opt", init_optimizer=True,
                           model={"linear": "low_rank", "linear_options": {"rank": 8}}))
    out = capsys.readouterr().out
    # 2 blocks x 2 norms, the final norm and the tied embedding keep their moments; the 2 x 4 converted
    # projections (A and B each) start fresh
    assert "optimiser state of 6 of 22 parameters" in out and "16 start fresh" in out
    with_state = {n for n, p in trainer.module.named_parameters() if p in trainer.optimizer.state}
    assert with_state == {"embed.weight", "norm.weight"} | {f"blocks.{i}.{k}_norm.weight" for i in (0, 1)
                                                            for k in ("attn", "mlp")}


def test_init_optimizer_errors_name_the_field(sources, tmp_path):
    with pytest.raises(ConfigError, match=r"init_optimizer=true needs init_from"):
        Trainer(tiny_run_config(tmp_path, sources["data"], name="none", init_optimizer=True))
    with pytest.raises(ConfigError, match=r"init_optimizer=true: optim\.name='galore' but .* optim\.name='adamw'"):
        Trainer(_cfg(tmp_path, sources, "dense", "other_opt", init_optimizer=True,
                     optim={"name": "galore", "options": {"rank": 4}}))
    assert not (tmp_path / "other_opt").exists()
    from pretrainlab.eval.hf_export import export_hf

    hf = export_hf(sources["dense"], tmp_path / "hf")
    cfg = _cfg(tmp_path, {**sources, "hf": hf}, "hf", "from_hf", init_optimizer=True)
    with pytest.raises(ConfigError, match=r"init_optimizer=true: the Hugging Face Llama folder .* holds no optimiser"):
        Trainer(cfg)


GALORE = {"name": "galore", "lr": 1e-2, "options": {"rank": 4, "min_dim": 8, "update_proj_gap": 2}}


@pytest.fixture(scope="module")
def galore_source(sources) -> Path:
    cfg = tiny_run_config(sources["root"] / "runs", sources["data"], name="galore", model=MODEL,
                          train={"steps": 5}, optim=GALORE, eval={"every": None})
    return train_run(cfg)


def _galore_cfg(tmp: Path, sources, source: Path, name: str, options: dict, steps: int = 4):
    cfg = tiny_run_config(tmp, sources["data"], name=name, train={"steps": steps}, eval={"every": None},
                          optim={**GALORE, "options": options})
    return cfg.model_copy(update={"init_from": str(source), "init_optimizer": True})


@pytest.mark.parametrize("key, value, shown", [("rank", 8, "8"), ("proj_type", "left", "'left'"),
                                               ("min_dim", 64, "64"), ("update_proj_gap", 3, "3")])
def test_init_optimizer_needs_the_source_options(sources, galore_source, tmp_path, key, value, shown):
    """Another rank (or proj_type, min_dim...) gives the source's state other shapes or meaning: refused up
    front, naming the option and both values, before the run folder is made (it used to crash at the
    first projection refresh)."""
    options = {**GALORE["options"], key: value}
    theirs = repr(GALORE["options"].get(key, "std"))
    with pytest.raises(ConfigError, match=rf"init_optimizer=true: optim\.options\.{key}={shown} but .* was "
                       rf"trained with optim\.options\.{key}={theirs}") as e:
        Trainer(_galore_cfg(tmp_path, sources, galore_source, "other_options", options))
    assert "init_optimizer=false" in str(e.value) and not (tmp_path / "other_options").exists()


def test_init_optimizer_with_the_source_options_trains(sources, galore_source, tmp_path, capsys):
    # writing a default out (scale 0.25) is the same options
    trainer = Trainer(_galore_cfg(tmp_path, sources, galore_source, "same", {**GALORE["options"], "scale": 0.25}))
    assert "optimiser state of 14 of 14 parameters" in capsys.readouterr().out
    trainer.fit()  # past two projection refreshes
    assert trainer.step == 4


def test_init_optimizer_refuses_a_state_of_other_shapes(sources, galore_source, tmp_path):
    """A source whose config.yaml says rank 8 while its checkpoint holds rank-4 state: the loaded shapes
    are checked against what the optimiser makes, and refused by name before training."""
    import shutil

    import yaml

    copy = tmp_path / "edited"
    shutil.copytree(galore_source, copy)
    tree = yaml.safe_load((copy / "config.yaml").read_text())
    tree["optim"]["options"]["rank"] = 8
    (copy / "config.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"the optimiser state 'blocks\.0\.attn\.qkv\.weight' 'proj' has shape "
                       r"\(32, 4\), but this run's GaLoreAdamW makes it \(32, 8\)"):
        Trainer(_galore_cfg(tmp_path, sources, copy, "edited_run", {**GALORE["options"], "rank": 8}))


def test_pela_flow_full_rank_student_matches_its_teacher_features(sources, tmp_path):
    """init_from a dense run into low_rank at full rank, feature-distilled from that run: the first step's
    feature_mse (computed before any update) is ~0, the student computing what the teacher does."""
    import json

    cfg = _cfg(tmp_path, sources, "dense", "pela", model={"linear": "low_rank",
                                                          "linear_options": {"rank_fraction": 1.0}},
               objective="feature_distill", teacher=str(sources["dense"]), train={"steps": 3})
    Trainer(cfg).fit()
    lines = [json.loads(x) for x in (tmp_path / "pela" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "lr" in r]
    print("feature_mse per step", [f"{r['feature_mse']:.2e}" for r in train_lines])
    assert train_lines[0]["feature_mse"] < 1e-10
    assert train_lines[0]["ce"] == pytest.approx(train_lines[0]["loss"], abs=1e-8)
