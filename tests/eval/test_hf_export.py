"""Hugging Face export: transformers loads the folder with no custom code and computes the same function.

Logits of LlamaForCausalLM (fp32) and pretrainlab on random tokens agree to < 1e-4 for tied and untied
heads, grouped-query attention, biases, a BPE and a byte tokenizer; the tokenizers (bytes, BPE, and a `file`
tokenizer whose post-processor adds `<s>`) give identical ids with end-of-text as bos; greedy generation
agrees, also through `generate(**tok(text))`; models with no Llama equivalent are refused naming the part;
the output is atomic, and --overwrite never replaces the run, its checkpoint, its data or a foreign folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_prepared, markov_docs, tiny_run_config, train_run
from pretrainlab.cli import main
from pretrainlab.errors import ConfigError
from pretrainlab.eval.hf_export import export_hf
from pretrainlab.eval.hf_llama import half_to_interleaved, interleaved_to_half
from pretrainlab.eval.load import load_run
from pretrainlab.model.rope import apply_rope, rope_table

pytestmark = pytest.mark.usefixtures("one_thread")
transformers = pytest.importorskip("transformers")

TEXTS = ["Hello, world!", "naïve café — 日本語のテキスト 🎉", "  two spaces\n\ttab\r\nend", "x", "", "a" * 100]
# init_std 0.2: attention logits far from uniform, so a wrong q/k row order shows in the logits (with
# the default 0.02 a missing RoPE permutation changes them by only ~1e-3; at 0.2 these tests fail without it).
BIG_INIT = {"init_std": 0.2}


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bytes")
    return make_prepared(root / "prepared", train={"a": markov_docs(rng, 40)}, val={"a": markov_docs(rng, 4)})


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory) -> Path:
    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    root = tmp_path_factory.mktemp("bpe")
    words = ["alpha", "beta", "gamma", "delta", "café", "naïve", "日本", "def", "return", "(x)", "\n"]
    rng = np.random.default_rng(1)
    for i in range(6):
        (root / f"doc{i}.txt").write_text(" ".join(rng.choice(words, size=400)), encoding="utf-8")
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "text", "domain": "d", "paths": [str(root / "*.txt")]}],
        "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_sample_bytes": 20_000},
        "validation": {"fraction": 0.2},
        "output": str(root / "prepared"),
    })
    return prepare(cfg, progress=False)


@pytest.fixture(scope="module")
def file_data(tmp_path_factory) -> Path:
    """A `file` tokenizer (tokenizer.json) whose TemplateProcessing post-processor adds `<s>`, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from pretrainlab.config import PrepareConfig, validate
    from pretrainlab.data.prepare import prepare

    root = tmp_path_factory.mktemp("file")
    words = ["alpha", "beta", "gamma", "delta", "def", "return", "café"]
    rng = np.random.default_rng(2)
    docs = [" ".join(rng.choice(words, size=300)) for _ in range(4)]
    for i, doc in enumerate(docs):
        (root / f"d{i}.txt").write_text(doc, encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(root / "tokenizer.json"))
    assert tok.encode("alpha").ids[0] == 0  # the template adds <s>
    cfg = validate(PrepareConfig, {
        "sources": [{"type": "text", "domain": "d", "paths": [str(root / "*.txt")]}],
        "tokenizer": {"kind": "file", "path": str(root / "tokenizer.json"), "eot_token": "</s>", "pad_token": "<unk>"},
        "validation": {"fraction": 0.25},
        "output": str(root / "prepared"),
    })
    return prepare(cfg, progress=False)


def _run(tmp: Path, data: Path, name: str, steps: int = 3, **model) -> Path:
    return train_run(tiny_run_config(tmp, data, name=name, model={"n_layers": 2, "d_model": 32, "n_heads": 2,
                                                                    **BIG_INIT, **model}, train={"steps": steps}))


def _max_logit_diff(run: Path, out: Path, vocab: int) -> float:
    model, *_ = load_run(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, vocab, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.logits(model(tokens))
        theirs = hf(tokens).logits
    assert theirs.shape == ours.shape
    return float((ours - theirs).abs().max())


def test_interleaved_rope_after_the_permutation_is_rotate_half():
    """The layout change itself: rotating interleaved pairs of q equals HF's rotate_half of permuted q."""
    T, H, D = 7, 3, 8
    q = torch.randn(1, T, H, D, generator=torch.Generator().manual_seed(0))
    table = rope_table(D, T, 10000.0)
    ours = apply_rope(q, table)
    w = q[0].permute(1, 2, 0).reshape(H * D, T)  # rows as a projection's output rows, per head
    p = interleaved_to_half(w, H).reshape(H, D, T).permute(2, 0, 1)  # (T, H, D) in HF layout
    cos = torch.cat((table[:, :, 0], table[:, :, 0]), dim=-1)[:, None, :]
    sin = torch.cat((table[:, :, 1], table[:, :, 1]), dim=-1)[:, None, :]
    rotate_half = torch.cat((-p[..., D // 2 :], p[..., : D // 2]), dim=-1)
    hf = p * cos + rotate_half * sin
    back = half_to_interleaved(hf.permute(1, 2, 0).reshape(H * D, T), H).reshape(H, D, T).permute(2, 0, 1)
    torch.testing.assert_close(back, ours[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(half_to_interleaved(interleaved_to_half(w, H), H), w, rtol=0, atol=0)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param({}, id="tied-mha"),
        pytest.param({"tie_embeddings": False, "n_heads": 4, "n_kv_heads": 2, "bias": True, "rope_theta": 500.0},
                     id="untied-gqa-bias"),
    ],
)
def test_logits_match_transformers(tmp_path, byte_data, model):
    run = _run(tmp_path, byte_data, "r", **model)
    out = export_hf(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 258
    assert config["tie_word_embeddings"] == model.get("tie_embeddings", True)
    assert config["num_key_value_heads"] == model.get("n_kv_heads", model.get("n_heads", 2))
    assert config["attention_bias"] == config["mlp_bias"] == model.get("bias", False)
    diff = _max_logit_diff(run, out, 258)
    print(f"max |logits diff| {diff:.3g}")
    assert diff < 1e-4


def test_byte_tokenizer_gives_pretrainlab_ids(tmp_path, byte_data):
    run = _run(tmp_path, byte_data, "r", steps=2)
    out = export_hf(run, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_run(run)[2].tokenizer
    for text in TEXTS:
        assert tok(text).input_ids == ours.encode(text) == list(text.encode("utf-8")), text
        assert tok.decode(tok(text).input_ids) == text
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (256, 257, 256)
    assert len(tok) == 258


def test_bpe_run_logits_and_tokenizer(tmp_path, bpe_data):
    run = _run(tmp_path, bpe_data, "bpe", tie_embeddings=False)
    out = export_hf(run, tmp_path / "hf")
    diff = _max_logit_diff(run, out, 300)
    print(f"max |logits diff| {diff:.3g}")
    assert diff < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_run(run)[2].tokenizer
    for text in TEXTS + ["alpha beta café", "def gamma(x):\n return delta"]:
        assert tok(text).input_ids == ours.encode(text), text
        assert tok.decode(tok(text).input_ids) == text
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (ours.eot_id, ours.pad_id, ours.eot_id)


def test_file_tokenizer_post_processor_is_dropped_and_bos_is_end_of_text(tmp_path, file_data):
    """A tokenizer.json whose template adds `<s>`: the export's tokenizer adds nothing (ids = pretrainlab's)
    and bos is end-of-text (`</s>`), in config.json, tokenizer_config.json and special_tokens_map.json."""
    run = _run(tmp_path, file_data, "file", steps=2)
    out = export_hf(run, tmp_path / "hf")
    ours = load_run(run)[2].tokenizer
    tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in ["alpha beta", "def gamma café", "x", ""]:
        assert tok(text).input_ids == ours.encode(text), text
    eot = ours.eot_id
    assert tok.convert_ids_to_tokens(eot) == "</s>"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (eot, eot, ours.pad_id)
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (eot, eot)
    assert json.loads((out / "generation_config.json").read_text())["bos_token_id"] == eot
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        special = json.loads((out / name).read_text())
        assert special["bos_token"] == special["eos_token"] == "</s>", name
    assert json.loads((out / "tokenizer.json").read_text())["post_processor"] is None
    assert _max_logit_diff(run, out, ours.vocab_size) < 1e-4


def test_generate_on_the_tokenizer_output_works(tmp_path, byte_data):
    """`model.generate(**tok(text, return_tensors="pt"))`: the tokenizer returns no token_type_ids (which
    LlamaForCausalLM refuses in transformers 4.x), only input_ids and attention_mask."""
    run = _run(tmp_path, byte_data, "r", steps=2)
    out = export_hf(run, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert "token_type_ids" not in tok("x")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    enc = tok("def fib(n):", return_tensors="pt")
    assert sorted(enc) == ["attention_mask", "input_ids"]
    assert hf.generate(**enc, max_new_tokens=3, do_sample=False).shape == (1, enc["input_ids"].shape[1] + 3)


def test_greedy_generation_matches(tmp_path, byte_data):
    from pretrainlab.eval.generate import generate

    run = _run(tmp_path, byte_data, "r", steps=20)
    out = export_hf(run, tmp_path / "hf")
    model, _, data, _ = load_run(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    for prompt in ("abc", "hello"):
        ours = generate(model, data.tokenizer, prompt, max_tokens=12, temperature=0.0, top_k=None, seed=0,
                        device=torch.device("cpu"))
        ids = torch.tensor([[tok.bos_token_id] + tok(prompt).input_ids])  # pretrainlab starts at end-of-text
        # generation_config.json suppresses padding, as pretrainlab's sampler does
        gen = hf.generate(ids, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(ids))
        assert ours and tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True) == ours


@pytest.mark.parametrize(
    "model, field",
    [
        ({"norm": "layernorm"}, "model.norm='layernorm'"),
        ({"mlp": "gelu"}, "model.mlp='gelu'"),
        ({"qk_norm": True}, "model.qk_norm=true"),
    ],
)
def test_parts_without_llama_equivalent_are_refused(tmp_path, byte_data, model, field):
    run = _run(tmp_path, byte_data, "r", steps=2, **model)
    with pytest.raises(ConfigError, match="no Hugging Face Llama equivalent") as e:
        export_hf(run, tmp_path / "hf")
    assert field in str(e.value)
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def test_unregistered_components_are_refused_before_loading(tmp_path):
    """attention and linear recipes (registered elsewhere) are named too, all parts in one message."""
    from pretrainlab.config import RunConfig
    from pretrainlab.train.run_folder import write_config

    run = tmp_path / "run"
    run.mkdir()
    model = {"attention": "ring", "linear": "lowrank", "norm": "layernorm"}
    write_config(run, RunConfig.model_validate({"model": model}))
    with pytest.raises(ConfigError) as e:
        export_hf(run, tmp_path / "hf")
    for part in ("model.attention='ring'", "model.linear='lowrank'", "model.norm='layernorm'"):
        assert part in str(e.value)


def test_output_is_refused_when_not_empty_and_replaced_atomically(tmp_path, byte_data, monkeypatch):
    run = _run(tmp_path, byte_data, "r", steps=2)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_hf(run, out)
    # --overwrite replaces only an earlier export (one with pretrainlab.json), never a folder of your own
    with pytest.raises(ConfigError, match="not written by `pretrainlab export`.*pretrainlab.json"):
        export_hf(run, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export_hf(run, out)  # an empty folder is fine
    (out / "extra.txt").write_text("an earlier export, with a file added")
    # a failure while writing leaves the old folder as it was and no temporary folder behind
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        export_hf(run, out, overwrite=True)
    assert (out / "extra.txt").is_file() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    export_hf(run, out, overwrite=True)
    assert not (out / "extra.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_overwrite_never_replaces_the_run_its_checkpoint_or_its_data(tmp_path, byte_data):
    """OUT that is, or contains, the run folder, the checkpoint or the prepared data is refused, also with
    --overwrite (replacing OUT would delete them)."""
    from pretrainlab.train.checkpoint import find_latest_checkpoint

    run = _run(tmp_path, byte_data, "r", steps=2)
    ckpt = find_latest_checkpoint(run)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out, what in ((run, "is the run folder"), (tmp_path, "contains the run folder"),
                      (ckpt, "is the checkpoint"), (byte_data, "is the prepared-data folder"),
                      (byte_data.parent, "contains the prepared-data folder")):
        with pytest.raises(ConfigError, match=what):
            export_hf(run, out, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert find_latest_checkpoint(run) == ckpt and (byte_data / "manifest.json").is_file()
    # a folder inside the run folder is a fine place for an export
    assert (export_hf(run, run / "hf") / "model.safetensors").is_file()


def test_stale_temporary_folders_of_dead_exports_are_swept(tmp_path, byte_data):
    import subprocess
    import sys

    run = _run(tmp_path, byte_data, "r", steps=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".hf.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    other = tmp_path / f".hf.tmp-{os.getppid()}"  # a live process (pytest's parent): left alone
    other.mkdir()
    export_hf(run, tmp_path / "hf")
    assert not stale.exists() and other.is_dir()


def test_cli_export_bfloat16(tmp_path, byte_data, capsys):
    run = _run(tmp_path, byte_data, "r", steps=2)
    out = tmp_path / "hf16"
    assert main(["export", str(run), "--format", "hf", str(out), "--dtype", "bfloat16"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    provenance = json.loads((out / "pretrainlab.json").read_text())
    assert provenance["step"] == 2 and provenance["tokenizer_kind"] == "bytes"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert hf.dtype == torch.bfloat16
    assert main(["export", str(run), str(out), "--data", str(byte_data)]) == 2  # exists, not empty
    assert main(["export", str(run), str(tmp_path / "again"), "--data", str(byte_data)]) == 0


def test_every_model_config_field_is_mapped_refused_or_not_carried():
    from pretrainlab.config import ModelConfig
    from pretrainlab.eval.hf_llama import LLAMA_ONLY_FIELDS, MAPPED_FIELDS, NOT_CARRIED_FIELDS, unsupported_parts

    decided = set(MAPPED_FIELDS) | set(LLAMA_ONLY_FIELDS) | set(NOT_CARRIED_FIELDS)
    assert decided == set(ModelConfig.model_fields), "decide how a new ModelConfig field exports (eval/hf_llama.py)"
    assert unsupported_parts(ModelConfig(**LLAMA_ONLY_FIELDS)) == []  # the Llama values are the defaults' own
    assert len(unsupported_parts(ModelConfig(linear_options={"rank": 4}))) == 1


def test_lm_eval_hf_model_scores_the_export_like_pretrainlab(tmp_path, byte_data):
    """lm-evaluation-harness `--model hf` on the export gives pretrainlab's own log-likelihoods."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pretrainlab.eval.likelihood import score_continuations

    run = _run(tmp_path, byte_data, "r", steps=2)
    out = export_hf(run, tmp_path / "hf")
    pairs = [("abcabc", "abc"), ("abcabc", "zzz"), ("hello", " world")]
    lm = HFLM(pretrained=str(out), device="cpu", batch_size=1)
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    ours = score_continuations(load_run(run)[0], [(list(c.encode()), list(x.encode())) for c, x in pairs])
    for (logprob, greedy), score in zip(theirs, ours):
        assert abs(logprob - score.logprob) < 1e-4 and greedy == score.greedy
