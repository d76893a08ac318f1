"""Import for continued pretraining: Llama folders (single file or sharded) read back exactly, unsupported
settings refused by key, and `init_from` (HF folder, run folder, checkpoint folder) starts a run from the
source's weights with the architecture filled from it; a resumed run keeps its own checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.config import ModelConfig
from pretrainlab.errors import CheckpointError, ConfigError, DataError
from pretrainlab.eval.evaluate import evaluate
from pretrainlab.eval.hf_export import export_hf
from pretrainlab.eval.hf_import import read_hf_config, read_hf_llama
from pretrainlab.eval.load import load_run
from pretrainlab.train.checkpoint import find_latest_checkpoint, load_checkpoint
from pretrainlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE_MODEL = {"n_layers": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "tie_embeddings": False,
                "bias": True, "rope_theta": 500.0, "norm_eps": 1e-6, "init_std": 0.2}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(prepared data, a trained source run, its Hugging Face export)."""
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    data = make_prepared(root / "prepared", train={"a": markov_docs(rng, 40)}, val={"a": markov_docs(rng, 4)})
    run = train_run(tiny_run_config(root / "runs", data, name="src", model=SOURCE_MODEL, train={"steps": 4}))
    return data, run, export_hf(run, root / "hf")


def _cfg(tmp: Path, data: Path, init_from: Path | str, name: str = "cont", **sections):
    cfg = tiny_run_config(tmp, data, name=name, **sections)
    return cfg.model_copy(update={"model": ModelConfig.model_validate(sections.get("model", {})),
                                  "init_from": str(init_from)})


def _val_loss(model: torch.nn.Module, data: Path) -> float:
    from pretrainlab.data.prepared import PreparedData

    return evaluate(model, PreparedData(data), seq_len=32, max_tokens_per_domain=512, batch_size=8,
                    device=torch.device("cpu"), autocast_dtype=None)["val_loss"]


def _hf_config(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_export_reads_back_exactly(source):
    _, run, hf = source
    model, *_ = load_run(run)
    cfg, state = read_hf_llama(hf)
    for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "mlp_hidden", "vocab_size", "max_seq_len",
              "tie_embeddings", "bias", "rope_theta", "norm_eps"):
        assert getattr(cfg, f) == getattr(model.cfg, f), f
    ours = model.state_dict()
    assert state.keys() == ours.keys()
    for k in ours:
        assert torch.equal(state[k], ours[k]), k


def test_sharded_folder_saved_by_transformers(source, tmp_path):
    transformers = pytest.importorskip("transformers")
    _, run, hf = source
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    _, state = read_hf_llama(tmp_path / "sharded")
    ours = load_run(run)[0].state_dict()
    assert all(torch.equal(state[k], ours[k]) for k in ours)


@pytest.mark.parametrize("tied, bias", [(False, False), (True, True)])
def test_a_model_made_by_transformers_computes_the_same_in_pretrainlab(tmp_path, tied, bias):
    """The import on its own (not an export read back): a LlamaForCausalLM initialised and saved by
    transformers, loaded into pretrainlab's Decoder, gives the same logits."""
    transformers = pytest.importorskip("transformers")
    from pretrainlab.model import build_model

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=40, rms_norm_eps=1e-6, rope_theta=300.0,
        tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias, initializer_range=0.2,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    if bias:  # transformers initialises biases to zero; make them matter
        with torch.no_grad():
            for name, param in hf.named_parameters():
                if name.endswith(".bias"):
                    param.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "hf")
    cfg, state = read_hf_llama(tmp_path / "hf")
    assert (cfg.n_kv_heads, cfg.max_seq_len, cfg.tie_embeddings, cfg.bias) == (2, 40, tied, bias)
    model = build_model(cfg).eval()
    model.load_state_dict(state)
    tokens = torch.randint(0, 96, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = float((model.logits(model(tokens)) - hf(tokens).logits).abs().max())
    print(f"max |logits diff| {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 500.0}}, "rope_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "mistral"}, "model_type"),
        ({"head_dim": 16}, "head_dim"),
        ({"sliding_window": 4096}, "sliding_window"),
        ({"mlp_bias": False}, "mlp_bias"),
        ({"attention_dropout": 0.1}, "attention_dropout"),
        ({"num_key_value_heads": 3}, r"num_key_value_heads=3 does not divide num_attention_heads=4"),
    ],
)
def test_unsupported_llama_settings_are_refused_by_key(source, tmp_path, changes, key):
    folder = _hf_config(source[2], tmp_path / "hf", **changes)
    with pytest.raises(ConfigError, match=key):
        read_hf_config(folder)


def test_missing_tensor_and_pickled_weights_are_named(source, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _hf_config(source[2], tmp_path / "hf")
    tensors = load_file(source[2] / "model.safetensors")
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight"):
        read_hf_llama(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_hf_llama(folder)


def test_a_tensor_in_two_files_without_an_index_names_both(source, tmp_path):
    import shutil

    folder = _hf_config(source[2], tmp_path / "hf")
    shutil.copy(source[2] / "model.safetensors", folder / "model.safetensors")
    shutil.copy(source[2] / "model.safetensors", folder / "model-old.safetensors")
    with pytest.raises(CheckpointError, match=r"is in both model-old\.safetensors and model\.safetensors.*no "
                       r"model\.safetensors\.index\.json"):
        read_hf_llama(folder)


def test_init_from_hf_folder_starts_at_the_source_loss(source, tmp_path, capsys):
    data, run, hf = source
    cfg = _cfg(tmp_path, data, hf, train={"steps": 3})
    trainer = Trainer(cfg)
    assert "init_from: weights from the Hugging Face Llama folder" in capsys.readouterr().out
    for f, v in SOURCE_MODEL.items():
        if f != "init_std":
            assert getattr(trainer.model_cfg, f) == v, f
    source_loss, start_loss = _val_loss(load_run(run)[0], data), _val_loss(trainer.module, data)
    print(f"val_loss source {source_loss:.7f}, init_from step 0 {start_loss:.7f}")
    assert abs(start_loss - source_loss) < 1e-5
    assert trainer.step == 0 and not trainer.optimizer.state  # fresh optimiser
    trainer.fit()
    # config.yaml records the filled model, so eval/export of the new run need no source
    model, saved, *_ = load_run(tmp_path / "cont")
    assert saved.model.n_kv_heads == 2 and saved.model.bias and saved.init_from == str(hf)


@pytest.mark.parametrize("which", ["run", "checkpoint"])
def test_init_from_run_or_checkpoint_folder(source, tmp_path, which):
    data, run, _ = source
    ckpt = find_latest_checkpoint(run)
    trainer = Trainer(_cfg(tmp_path, data, run if which == "run" else ckpt))
    expected, _ = load_checkpoint(ckpt)
    got = trainer.module.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_shape_fields_that_disagree_are_named(source, tmp_path):
    data, _, hf = source
    with pytest.raises(ConfigError, match=r"model\.d_model=64 does not match init_from.*d_model=32"):
        Trainer(_cfg(tmp_path, data, hf, model={"d_model": 64}))
    with pytest.raises(ConfigError, match=r"model\.n_layers=4 \(from model\.preset='mini'\)"):
        Trainer(_cfg(tmp_path, data, hf, model={"preset": "mini"}))
    # fields that agree, and rope_theta changed on purpose, are fine
    trainer = Trainer(_cfg(tmp_path, data, hf, name="ok", model={"n_layers": 2, "rope_theta": 1000.0}))
    assert trainer.model_cfg.rope_theta == 1000.0 and trainer.model_cfg.n_kv_heads == 2


def test_data_vocabulary_larger_than_the_source_is_refused(source, tmp_path):
    rng = np.random.default_rng(1)
    wide = make_prepared(tmp_path / "wide", train={"a": markov_docs(rng, 10)}, vocab_size=300)
    with pytest.raises(DataError, match=r"vocabulary of 300 tokens.*embeds only 258") as e:
        Trainer(_cfg(tmp_path, wide, source[2]))
    assert "tokenizer.path=" in str(e.value)


def test_another_tokenizer_is_warned_about(source, tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    data, _, hf = source
    folder = _hf_config(hf, tmp_path / "hf")
    (folder / "model.safetensors").write_bytes((hf / "model.safetensors").read_bytes())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["the quick brown fox"] * 50, trainers.BpeTrainer(vocab_size=280, show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    Trainer(_cfg(tmp_path, data, folder))
    assert "tokenized differently" in capsys.readouterr().out


def test_resume_continues_from_its_own_checkpoint(source, tmp_path, capsys):
    data, _, hf = source
    cfg = _cfg(tmp_path, data, hf, train={"steps": 3})
    Trainer(cfg).fit()
    own, _ = load_checkpoint(find_latest_checkpoint(tmp_path / "cont"))
    capsys.readouterr()
    resumed = Trainer(cfg, resume=True)
    assert "init_from: weights from" not in capsys.readouterr().out
    got = resumed.module.state_dict()
    assert resumed.step == 3 and all(torch.equal(got[k], own[k]) for k in own)
    _, init = read_hf_llama(hf)
    assert not torch.equal(got["embed.weight"], init["embed.weight"])


def test_init_from_that_is_no_model_folder(source, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(_cfg(tmp_path, source[0], tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a run folder"):
        Trainer(_cfg(tmp_path, source[0], tmp_path / "empty"))


def test_resume_whose_only_checkpoint_fails_verification_starts_from_the_source(source, tmp_path, capsys):
    """`--resume` skips a checkpoint that fails verification and starts from step 0 (the trainer's restore);
    with init_from that start is the source's weights, never a random initialisation."""
    data, _, hf = source
    cfg = _cfg(tmp_path, data, hf, train={"steps": 3})
    Trainer(cfg).fit()
    (ckpt,) = (tmp_path / "cont" / "checkpoints").iterdir()
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    capsys.readouterr()
    resumed = Trainer(cfg, resume=True)
    out = capsys.readouterr().out
    assert "skipping checkpoint step-3" in out and "starting from step 0" in out
    assert "init_from: weights from the Hugging Face Llama folder" in out
    _, init = read_hf_llama(hf)
    got = resumed.module.state_dict()
    assert resumed.step == 0 and all(torch.equal(got[k], init[k]) for k in init)


def test_resume_needs_no_source_folder(source, tmp_path, capsys):
    """export -> init_from run -> the source folder is deleted -> --resume continues from the run's own
    checkpoint, its model section read from its config.yaml."""
    import shutil

    data, _, hf = source
    copy = tmp_path / "hf-copy"
    shutil.copytree(hf, copy)
    cfg = _cfg(tmp_path, data, copy, train={"steps": 4, "checkpoint_every": 2})
    Trainer(cfg).fit()
    shutil.rmtree(tmp_path / "cont" / "checkpoints" / "step-4")
    shutil.rmtree(copy)
    capsys.readouterr()
    resumed = Trainer(cfg, resume=True)
    assert "init_from: weights from" not in capsys.readouterr().out
    assert resumed.step == 2 and resumed.model_cfg.n_kv_heads == 2 and resumed.model_cfg.bias
    resumed.fit()
    assert find_latest_checkpoint(tmp_path / "cont").name == "step-4"
    # a resume with no checkpoint of its own still needs the source, and says so
    shutil.rmtree(tmp_path / "cont" / "checkpoints")
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(cfg, resume=True)
