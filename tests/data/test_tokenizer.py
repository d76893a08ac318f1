"""TextTokenizer: bytes, a trained BPE (deterministic), a user's tokenizer.json, and reloading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pretrainlab.config import TokenizerConfig
from pretrainlab.data.tokenizer import TextTokenizer
from pretrainlab.errors import ConfigError, DataError

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. " * 5,
    "for i in range(10):\n    print(i * i)\n",
    "naïve café — unicode text ✓ 日本語",
] * 10


def bpe(vocab_size: int = 300) -> TextTokenizer:
    return TextTokenizer.train(iter(CORPUS), TokenizerConfig(vocab_size=vocab_size))


def test_byte_tokenizer():
    tok = TextTokenizer.bytes()
    assert (tok.kind, tok.vocab_size, tok.eot_id, tok.pad_id, tok.sha256) == ("bytes", 258, 256, 257, "")
    assert tok.encode("hé") == [104, 195, 169]
    (arr,) = tok.encode_batch(["hé"])
    assert arr.tolist() == [104, 195, 169]
    assert tok.decode([104, 195, 169, 256, 257]) == "hé"


def test_bpe_training_is_deterministic_and_round_trips(tmp_path):
    a, b = bpe(), bpe()
    assert a.sha256 == b.sha256 and a.sha256 != ""
    assert a.kind == "bpe" and a.vocab_size == 300
    assert {a.eot_id, a.pad_id} == {0, 1}
    for text in CORPUS[:4]:
        ids = a.encode(text)
        assert max(ids) < a.vocab_size and a.decode(ids) == text
    batch = a.encode_batch(CORPUS[:4])
    assert [x.tolist() for x in batch] == [a.encode(t) for t in CORPUS[:4]]
    assert len(a.encode(CORPUS[1])) < len(CORPUS[1].encode())  # merges were learnt
    path = a.save(tmp_path)
    assert path is not None and path.name == "tokenizer.json"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == a.sha256
    again = TextTokenizer.from_prepared(tmp_path, a.manifest_entry())
    assert again.encode(CORPUS[2]) == a.encode(CORPUS[2]) and again.eot_id == a.eot_id


def test_from_prepared_checks_the_hash(tmp_path):
    tok = bpe()
    tok.save(tmp_path)
    entry = dict(tok.manifest_entry(), sha256="0" * 64)
    with pytest.raises(DataError, match="does not match the sha256"):
        TextTokenizer.from_prepared(tmp_path, entry)
    assert TextTokenizer.from_prepared(tmp_path, {"kind": "bytes"}).vocab_size == 258


def _gpt2_like(tmp_path, eot: str = "<|endoftext|>"):
    """A byte-level BPE file with an end-of-text token and no padding token, like GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, special_tokens=[eot], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    path = tmp_path / "user_tokenizer.json"
    tok.save(str(path))
    return path, tok


def test_user_file_gets_a_distinct_pad_token(tmp_path):
    path, raw = _gpt2_like(tmp_path)
    tok = TextTokenizer.from_file(path)
    assert tok.kind == "file"
    assert tok.eot_id == raw.token_to_id("<|endoftext|>")
    assert tok.pad_id != tok.eot_id and tok.pad_id == raw.get_vocab_size(with_added_tokens=True)
    assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True) + 1
    assert tok.decode(tok.encode("def add(a, b):")) == "def add(a, b):"


def test_user_file_eot_by_common_name_or_config(tmp_path):
    path, raw = _gpt2_like(tmp_path, eot="</s>")
    assert TextTokenizer.from_file(path).eot_id == raw.token_to_id("</s>")
    path, raw = _gpt2_like(tmp_path, eot="<|my_end|>")
    with pytest.raises(DataError, match="no end-of-text token"):
        TextTokenizer.from_file(path)
    cfg = TokenizerConfig(kind="file", path=str(path), eot_token="<|my_end|>")
    assert TextTokenizer.from_file(path, cfg).eot_id == raw.token_to_id("<|my_end|>")


def test_unparsable_tokenizer_file_names_it(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not a valid tokenizer.json"):
        TextTokenizer.from_file(bad)
    bad.write_text(json.dumps({"model": {"type": "Nonsense"}}))
    with pytest.raises(DataError, match="broken.json: not a valid tokenizer.json"):
        TextTokenizer.from_file(bad)
    with pytest.raises(DataError, match="does not exist"):
        TextTokenizer.from_file(tmp_path / "missing.json")


def test_pad_must_differ_from_eot():
    with pytest.raises(ConfigError, match="pad_token"):
        TextTokenizer.train(iter(CORPUS), TokenizerConfig(vocab_size=300, pad_token="<|endoftext|>"))


def test_encode_batch_returns_integer_arrays():
    for tok in (TextTokenizer.bytes(), bpe()):
        out = tok.encode_batch(["a b", ""])
        assert all(isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer) for x in out)
        assert out[1].size == 0


def test_special_token_text_inside_a_document_is_not_a_special_id(tmp_path):
    tok = bpe()
    ids = tok.encode("a <|endoftext|> b <|pad|> c")
    assert tok.eot_id not in ids and tok.pad_id not in ids
    assert tok.decode(ids) == "a <|endoftext|> b <|pad|> c"
    tok.save(tmp_path)
    again = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.encode("x<|endoftext|>y") == tok.encode("x<|endoftext|>y")
    assert again.eot_id not in again.encode("x<|endoftext|>y")
