"""Sampling: deterministic per seed, greedy equals argmax, stops at end-of-text, crops the context."""

import torch
from torch import nn

from pretrainlab.eval.generate import generate, sample_next

CPU = torch.device("cpu")


class ByteTok:
    """Stand-in for the byte tokenizer: ids 0-255 are bytes, 256 end-of-text, 257 padding."""

    eot_id, pad_id, vocab_size = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class Bigram(nn.Module):
    def __init__(self, vocab: int = 258, seed: int = 0, max_len: int | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g) * 3)
        self.max_len = max_len
        self.lengths: list[int] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.lengths.append(tokens.shape[1])
        assert self.max_len is None or tokens.shape[1] <= self.max_len
        return self.table[tokens]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def test_same_seed_same_text_other_seed_other_text():
    model, tok = Bigram(), ByteTok()
    kw = dict(max_tokens=40, temperature=1.0, top_k=50, device=CPU)
    a = generate(model, tok, "def ", seed=1, **kw)
    assert a == generate(model, tok, "def ", seed=1, **kw)
    others = {generate(model, tok, "def ", seed=s, **kw) for s in range(2, 6)}
    assert others - {a}


def test_greedy_equals_argmax_chain():
    model, tok = Bigram(seed=2), ByteTok()
    model.table.data[:, tok.eot_id] = -1e9  # never stop early
    out = generate(model, tok, "x", max_tokens=12, temperature=0.0, top_k=None, seed=0, device=CPU)
    logits = model.table.detach().clone()
    logits[:, tok.pad_id] = float("-inf")
    ids, cur = [], ord("x")
    for _ in range(12):
        cur = int(torch.argmax(logits[cur]))
        ids.append(cur)
    assert out == tok.decode(ids)
    assert out == generate(model, tok, "x", max_tokens=12, temperature=0.0, top_k=None, seed=99, device=CPU)


def test_stops_at_end_of_text_and_never_samples_padding():
    model, tok = Bigram(), ByteTok()
    with torch.no_grad():
        model.table.fill_(-10.0)
        model.table[ord("a"), ord("b")] = 10.0
        model.table[ord("b"), tok.eot_id] = 10.0
        model.table[:, tok.pad_id] = 50.0
    out = generate(model, tok, "a", max_tokens=100, temperature=0.5, top_k=5, seed=0, device=CPU)
    assert out == "b"


def test_context_is_cropped_to_max_seq_len():
    model, tok = Bigram(max_len=8), ByteTok()
    model.table.data[:, tok.eot_id] = -1e9
    generate(model, tok, "a long prompt here", max_tokens=20, temperature=1.0, top_k=10, seed=0, device=CPU,
             max_seq_len=8)
    assert max(model.lengths) == 8 and len(model.lengths) == 20


def test_top_k_restricts_the_support():
    logits = torch.tensor([0.0, 5.0, 4.0, -3.0, 1.0])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, temperature=2.0, top_k=2, generator=g) for _ in range(200)}
    assert picks == {1, 2}
    assert sample_next(logits, temperature=0.0, top_k=2, generator=g) == 1
