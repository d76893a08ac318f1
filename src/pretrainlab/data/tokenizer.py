"""`TextTokenizer`: one interface over a trained byte-level BPE, a user's tokenizer.json, and raw bytes.

- `bpe`: a GPT-2-style byte-level BPE (ByteLevel pre-tokenizer and decoder, every byte in the initial
  alphabet so no text is out of vocabulary) trained with the `tokenizers` library on a sample of the data.
- `file`: any `tokenizer.json` (GPT-2's, Llama's, ...). The end-of-text token is found by name; a padding
  token distinct from it is added when the file has none, because the loader masks padding targets and a
  shared id would mask every real end-of-text too.
- `bytes`: ids 0..255 are the UTF-8 bytes, 256 is end-of-text, 257 padding; no file, no training, the
  fast path for tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.config import TokenizerConfig
from pretrainlab.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
BYTES_EOT, BYTES_PAD, BYTES_VOCAB = 256, 257, 258
COMMON_EOT_TOKENS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
COMMON_PAD_TOKENS = ("<|pad|>", "<pad>", "[PAD]", "<|padding|>")


class TextTokenizer:
    """Text <-> token ids, with the end-of-text and padding ids every other part of pretrainlab needs."""

    def __init__(
        self, kind: str, *, backend: Any | None, eot_id: int, pad_id: int, vocab_size: int, origin: str
    ) -> None:
        self.kind = kind
        self.eot_id = int(eot_id)
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size)
        self.origin = origin  # names the tokenizer in error messages
        self._backend = backend
        self._json = backend.to_str(pretty=True) if backend is not None else ""
        if backend is not None:
            # A document that spells out "<|endoftext|>" or "<|pad|>" gets ordinary byte tokens: only the
            # pipeline itself places end-of-text ids (one per document) and padding.
            backend.encode_special_tokens = True

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def bytes(cls) -> "TextTokenizer":
        return cls("bytes", backend=None, eot_id=BYTES_EOT, pad_id=BYTES_PAD, vocab_size=BYTES_VOCAB, origin="bytes")

    @classmethod
    def train(cls, texts: Iterable[str], cfg: TokenizerConfig) -> "TextTokenizer":
        """Train a byte-level BPE on `texts` (deterministic for the same texts and config)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        _check_distinct(cfg)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=[cfg.eot_token, cfg.pad_token],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(
            "bpe",
            backend=tok,
            eot_id=tok.token_to_id(cfg.eot_token),
            pad_id=tok.token_to_id(cfg.pad_token),
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
            origin=f"the BPE trained with vocab_size={cfg.vocab_size}",
        )

    @classmethod
    def from_file(cls, path: str | Path, cfg: TokenizerConfig | None = None) -> "TextTokenizer":
        """Load a tokenizer.json; find its end-of-text token, add a padding token if it has none."""
        from tokenizers import AddedToken

        cfg = cfg or TokenizerConfig(kind="file", path=str(path))
        _check_distinct(cfg)
        backend = _load_backend(Path(path))
        vocab = backend.get_vocab(with_added_tokens=True)
        eot = next((t for t in (cfg.eot_token, *COMMON_EOT_TOKENS) if t in vocab), None)
        if eot is None:
            raise DataError(
                f"{path}: no end-of-text token (looked for {', '.join(dict.fromkeys((cfg.eot_token, *COMMON_EOT_TOKENS)))})",
                hint="set tokenizer.eot_token to the document separator token of this tokenizer",
            )
        eot_id = vocab[eot]
        pad = next((t for t in (cfg.pad_token, *COMMON_PAD_TOKENS) if t in vocab and vocab[t] != eot_id), None)
        if pad is None:
            backend.add_special_tokens([AddedToken(cfg.pad_token, special=True, normalized=False)])
            pad = cfg.pad_token
        pad_id = backend.token_to_id(pad)
        return cls(
            "file",
            backend=backend,
            eot_id=eot_id,
            pad_id=pad_id,
            vocab_size=backend.get_vocab_size(with_added_tokens=True),
            origin=f"the tokenizer loaded from {path}",
        )

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, sample: Iterable[str] | None = None) -> "TextTokenizer":
        """The tokenizer a prepare config asks for; `sample` is the training text when kind=bpe."""
        if cfg.kind == "bytes":
            return cls.bytes()
        if cfg.kind == "file":
            assert cfg.path is not None
            return cls.from_file(cfg.path, cfg)
        if sample is None:
            raise ValueError("training a BPE needs a text sample")
        return cls.train(sample, cfg)

    @classmethod
    def from_prepared(cls, folder: str | Path, info: dict[str, Any]) -> "TextTokenizer":
        """The tokenizer saved in a prepared-data folder, checked against the manifest's record of it."""
        kind = info.get("kind")
        if kind == "bytes":
            return cls.bytes()
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(f"{path} is missing", hint="prepare the data again")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise DataError(f"{path}: does not match the sha256 in the manifest", hint="prepare the data again")
        backend = _load_backend(path)
        tok = cls(
            str(kind),
            backend=backend,
            eot_id=info["eot_id"],
            pad_id=info["pad_id"],
            vocab_size=info["vocab_size"],
            origin=f"the tokenizer of {folder}",
        )
        tok._json = data.decode("utf-8")
        return tok

    # -- use ---------------------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        """sha256 of the saved tokenizer.json ("" for the byte tokenizer, which has no file)."""
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest() if self._backend is not None else ""

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "pad_id": self.pad_id,
            "sha256": self.sha256,
        }

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any special token added."""
        if self._backend is None:
            return list(text.encode("utf-8"))
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text (multi-threaded in the `tokenizers` Rust core, offsets not computed)."""
        if self._backend is None:
            return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]
        encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.uint32) for e in encodings]

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of `ids`; end-of-text and padding are left out."""
        ids = [int(i) for i in ids]
        if self._backend is None:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._backend.decode(ids, skip_special_tokens=True)

    def save(self, folder: str | Path) -> Path | None:
        """Write `tokenizer.json` into `folder` (nothing for the byte tokenizer); returns its path."""
        if self._backend is None:
            return None
        path = Path(folder) / TOKENIZER_FILE
        path.write_bytes(self._json.encode("utf-8"))
        return path

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id}, pad_id={self.pad_id})"


def _load_backend(path: Path) -> Any:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist", hint="check tokenizer.path")
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
        return Tokenizer.from_str(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid tokenizer.json (not JSON: {e})", hint="point tokenizer.path at a tokenizer.json") from None
    except Exception as e:  # tokenizers raises a bare Exception for JSON it cannot interpret
        raise DataError(f"{path}: not a valid tokenizer.json ({e})", hint="point tokenizer.path at a tokenizer.json") from None


def _check_distinct(cfg: TokenizerConfig) -> None:
    if cfg.eot_token == cfg.pad_token:
        raise ConfigError(
            f"tokenizer.eot_token and tokenizer.pad_token are both {cfg.eot_token!r}",
            hint="padding must be its own token (the loader masks padding targets): set tokenizer.pad_token",
        )
