"""Tokenizer files of an exported model: tokenizer.json, tokenizer_config.json, special_tokens_map.json.

`AutoTokenizer.from_pretrained(folder)` loads them as a fast tokenizer with no custom code, and encodes
text to exactly the ids pretrainlab's tokenizer gives (`tokenizer(text).input_ids` adds nothing for the BPE
and byte tokenizers; a `file` tokenizer keeps its own post-processor, e.g. Llama's leading `<s>`):

- `bpe` and `file` runs: the prepared folder's tokenizer.json, byte for byte (it already holds the padding
  token pretrainlab added).
- `bytes` runs (no file): an equivalent `tokenizers` tokenizer is built: a BPE with no merges over the 256
  GPT-2 byte characters (id b = byte b), a ByteLevel pre-tokenizer without regex splitting and a ByteLevel
  decoder, then `<|endoftext|>` (256) and `<|pad|>` (257) as special tokens.

One difference stays: pretrainlab encodes a text that spells out a special token ("<|endoftext|>") as
ordinary tokens, since only the pipeline places end-of-text; Hugging Face maps it to the special id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrainlab.data.tokenizer import BYTES_EOT, BYTES_PAD, BYTES_VOCAB, TOKENIZER_FILE, TextTokenizer

BYTES_EOT_TOKEN, BYTES_PAD_TOKEN = "<|endoftext|>", "<|pad|>"
_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>")


def byte_level_tokenizer() -> Any:
    """A `tokenizers.Tokenizer` equal to pretrainlab's byte tokenizer: UTF-8 bytes are ids 0-255,
    end-of-text 256, padding 257."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    byte_char = _bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={byte_char[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([
        AddedToken(BYTES_EOT_TOKEN, special=True, normalized=False),
        AddedToken(BYTES_PAD_TOKEN, special=True, normalized=False),
    ])
    assert tok.token_to_id(BYTES_EOT_TOKEN) == BYTES_EOT and tok.token_to_id(BYTES_PAD_TOKEN) == BYTES_PAD
    assert tok.get_vocab_size(with_added_tokens=True) == BYTES_VOCAB
    return tok


def write_tokenizer_files(folder: Path, tokenizer: TextTokenizer, file: Path | None, *, max_len: int) -> dict[str, int]:
    """Write the three tokenizer files into `folder`; return the special ids {bos, eos, pad} for config.json.

    `tokenizer` is the run's (from its prepared folder, which checked the file's sha256), `file` its
    tokenizer.json (None for the byte tokenizer).

    End-of-text is the eos token and, unless the tokenizer has a begin-of-text token of its own, the bos
    token too (GPT-2's convention: every pretrainlab document follows an end-of-text), never added
    automatically. `max_len` becomes `model_max_length`.
    """
    from tokenizers import Tokenizer

    if file is None:
        backend = byte_level_tokenizer()
        text = backend.to_str(pretty=True)
    else:
        text = file.read_text(encoding="utf-8")
        backend = Tokenizer.from_str(text)
    (folder / TOKENIZER_FILE).write_text(text, encoding="utf-8")
    eos = backend.id_to_token(tokenizer.eot_id)
    pad = backend.id_to_token(tokenizer.pad_id)
    bos = _bos_token(json.loads(text), backend) or eos
    special = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return {"bos": int(backend.token_to_id(bos)), "eos": tokenizer.eot_id, "pad": tokenizer.pad_id}


def _bos_token(spec: dict[str, Any], backend: Any) -> str | None:
    """The begin-of-text token a `file` tokenizer adds itself (its post-processor's first special token),
    or one of the usual names in its vocabulary; None when it has neither."""
    post = spec.get("post_processor") or {}
    single = post.get("single") or []
    if single and "SpecialToken" in single[0]:
        return str(single[0]["SpecialToken"]["id"])
    vocab = backend.get_vocab(with_added_tokens=True)
    return next((t for t in _BOS_NAMES if t in vocab), None)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table
