"""Tokenizer files of an exported model: tokenizer.json, tokenizer_config.json, special_tokens_map.json.

`AutoTokenizer.from_pretrained(folder)` loads them as a fast tokenizer with no custom code, and
`tokenizer(text).input_ids` is exactly pretrainlab's `encode(text)` for every tokenizer kind: nothing is
added (pretrainlab never adds special tokens when encoding; the pipeline places end-of-text):

- `bpe` and `file` runs: the prepared folder's tokenizer.json (it already holds the padding token pretrainlab
  added), byte for byte, except that a post-processor adding special tokens (a `file` tokenizer's
  TemplateProcessing such as Llama's `<s> $A`, BERT/RoBERTa processing) is removed; a ByteLevel one stays.
- `bytes` runs (no file): an equivalent `tokenizers` tokenizer is built: a BPE with no merges over the 256
  GPT-2 byte characters (id b = byte b), a ByteLevel pre-tokenizer without regex splitting and a ByteLevel
  decoder, then `<|endoftext|>` (256) and `<|pad|>` (257) as special tokens.

The tokenizer returns only `input_ids` and `attention_mask` (`model_input_names`), so
`model.generate(**tokenizer(text, return_tensors="pt"))` works (a fast tokenizer would otherwise add
`token_type_ids`, which LlamaForCausalLM refuses in transformers 4.x).

One difference stays: pretrainlab encodes a text that spells out a special token ("<|endoftext|>") as
ordinary tokens, since only the pipeline places end-of-text; Hugging Face maps it to the special id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrainlab.data.tokenizer import BYTES_EOT, BYTES_PAD, BYTES_VOCAB, TOKENIZER_FILE, TextTokenizer
from pretrainlab.errors import ConfigError

BYTES_EOT_TOKEN, BYTES_PAD_TOKEN = "<|endoftext|>", "<|pad|>"
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
PROBE_TEXT = "Hello, world! naïve café 日本語 <s> </s> \n\tdef f(x): return x"


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

    End-of-text is the eos token and the bos token for every tokenizer kind (GPT-2's convention: every
    pretrainlab document follows an end-of-text, and pretrainlab's `generate` starts from it), never added
    automatically. `max_len` becomes `model_max_length`.
    """
    from tokenizers import Tokenizer

    if file is None:
        backend = byte_level_tokenizer()
        text = backend.to_str(pretty=True)
    else:
        text = file.read_text(encoding="utf-8")
        spec = json.loads(text)
        post = spec.get("post_processor")
        kept = _without_added_tokens(post)
        if kept != post:  # rewrite only when needed: otherwise the file stays byte for byte
            spec["post_processor"] = kept
            text = json.dumps(spec, ensure_ascii=False, indent=2) + "\n"
        backend = Tokenizer.from_str(text)
        with_special = backend.encode(PROBE_TEXT, add_special_tokens=True).ids
        if with_special != backend.encode(PROBE_TEXT, add_special_tokens=False).ids:  # not expected: say so
            raise ConfigError(
                f"{file}: the tokenizer still adds special tokens after its post-processor was removed",
                hint="export a run whose tokenizer.json adds no tokens in its post_processor",
            )
    (folder / TOKENIZER_FILE).write_text(text, encoding="utf-8")
    eos = backend.id_to_token(tokenizer.eot_id)
    pad = backend.id_to_token(tokenizer.pad_id)
    special = {"bos_token": eos, "eos_token": eos, "pad_token": pad}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_input_names": MODEL_INPUT_NAMES,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return {"bos": tokenizer.eot_id, "eos": tokenizer.eot_id, "pad": tokenizer.pad_id}


def _without_added_tokens(post: dict[str, Any] | None) -> dict[str, Any] | None:
    """A tokenizer.json `post_processor` without the parts that add special tokens (TemplateProcessing,
    BertProcessing, RobertaProcessing): a ByteLevel processor (it only adjusts offsets) is kept, also
    inside a Sequence; anything else becomes None."""
    if not post:
        return None
    kind = post.get("type")
    if kind == "ByteLevel":
        return post
    if kind == "Sequence":
        kept = [p for p in (_without_added_tokens(q) for q in post.get("processors") or []) if p is not None]
        return {**post, "processors": kept} if kept else None
    return None


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
