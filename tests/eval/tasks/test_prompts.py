"""Delimiters, lm-evaluation-harness tokenisation of a (context, continuation) pair, and few-shot prefixes."""

import re

import pytest

from pretrainlab.errors import ConfigError
from pretrainlab.eval.tasks.examples import Continuation, MinimalPair, MultipleChoice, Schema
from pretrainlab.eval.tasks.prompts import Prompting, attach, encode_pair, fewshot_prefixes, gold_text


class WordTok:
    """A BPE-like tokenizer: a word and the space before it are one token (" Paris"), as GPT-2's merges do."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab)) for w in re.findall(r"\s?\S+|\s+", text)]


def test_attach_delimiters():
    assert attach("about", " ", "signs") == "about "
    assert attach("5 + 5 =", " ", " 10") == "5 + 5 ="  # the continuation brings its own space
    assert attach("Hi \n", " ", "x") == "Hi \n"
    assert attach("Question: q?", "\nAnswer: ", "a") == "Question: q?\nAnswer: "
    assert attach("Question: q?\n", "\nAnswer: ", "a") == "Question: q?\nAnswer: "  # no doubled newline
    assert attach("", " ", "x") == ""


def test_encode_pair_moves_trailing_space_to_the_continuation():
    tok = WordTok()
    ctx, cont = encode_pair(tok, "The capital is", " Paris")
    assert (ctx, cont) == encode_pair(tok, "The capital is ", "Paris")
    assert cont == [tok.vocab[" Paris"]] and ctx == tok.encode("The capital is")
    ctx2, _ = encode_pair(tok, "The capital is ", "Rome")
    assert ctx2 == ctx  # every choice of a question gets the same context ids, which the engine runs once
    assert encode_pair(tok, "", "Cats run.") == ([], tok.encode("Cats run."))


def test_gold_text():
    assert gold_text(MultipleChoice("Q: x?", ("a", "b"), 1), "\nA: ") == "Q: x?\nA: b"
    assert gold_text(Schema(("A so A", "A so B"), "won.", 0), " ") == "A so A won."
    assert gold_text(Continuation("1 + 1 =", " 2"), " ") == "1 + 1 = 2"
    with pytest.raises(TypeError):
        gold_text(MinimalPair("a", "b"), " ")


def examples(n: int) -> list[MultipleChoice]:
    return [MultipleChoice(f"Q{i}?", (f"wrong{i}", f"right{i}"), 1) for i in range(n)]


def test_fewshot_prefix_format_determinism_and_never_itself():
    exs = examples(6)
    p = Prompting(delimiter=" ", num_fewshot=3, seed=7)
    prefixes = fewshot_prefixes(exs, 6, p, "t")
    assert prefixes == fewshot_prefixes(exs, 6, p, "t")  # the same seed draws the same shots
    assert prefixes != fewshot_prefixes(exs, 6, Prompting(delimiter=" ", num_fewshot=3, seed=8), "t")
    for i, prefix in enumerate(prefixes):
        shots = prefix.split("\n\n")
        assert shots[-1] == "" and len(shots) == 4  # three shots, each followed by "\n\n"
        assert all(re.fullmatch(r"Q(\d)\? right\1", s) for s in shots[:3])
        assert f"Q{i}?" not in prefix  # never the example itself
        assert len(set(shots[:3])) == 3  # drawn without replacement
    assert fewshot_prefixes(exs, 2, Prompting(num_fewshot=0), "t") == ["", ""]
    custom = fewshot_prefixes(exs, 1, Prompting(delimiter=" ", num_fewshot=1, fewshot_delimiter="\n###\n"), "t")[0]
    assert custom.endswith("\n###\n") and custom.count("###") == 1


def test_fewshot_needs_enough_examples():
    with pytest.raises(ConfigError, match=r"task 'tiny': num_fewshot=3 needs at least 4 examples, the file has 3"):
        fewshot_prefixes(examples(3), 3, Prompting(num_fewshot=3), "tiny")


def test_fewshot_never_draws_the_same_question():
    """WinoGrande twins (same options, or same continuation, opposite gold) and repeated queries are not shots."""
    mc = [MultipleChoice("Q?", ("a", "b"), 0, "f:1"), MultipleChoice("Q?", ("a", "b"), 1, "f:2")] + examples(4)
    for prefix in fewshot_prefixes(mc, 2, Prompting(num_fewshot=4, seed=3), "t"):
        assert "Q?" not in prefix and prefix.count("right") == 4
    twins = [Schema(("A so A", "A so B"), "won.", 0), Schema(("A so A", "A so B"), "lost.", 1),
             Schema(("C so C", "C so D"), "won.", 1)] + [Schema((f"X{i} so X", f"X{i} so Y"), f"z{i}.", 0)
                                                       for i in range(3)]
    p0, p1, p2 = fewshot_prefixes(twins, 3, Prompting(num_fewshot=3, seed=1), "t")
    assert "A so" not in p0 and "C so" not in p0  # its twin by options, and the one by continuation
    assert "A so" not in p1  # its twin by options (example 2 shares nothing with it)
    assert "won." not in p2 and "C so" not in p2  # its twin by continuation, and itself
    with pytest.raises(ConfigError, match=r"num_fewshot=5 needs 5 shots other than the example at f:1 and its "
                                          r"duplicates.*only 4 of the 6 examples"):
        fewshot_prefixes(mc, 1, Prompting(num_fewshot=5), "t")


def test_fewshot_from_another_file():
    train = [MultipleChoice(f"T{i}?", ("no", f"yes{i}"), 1) for i in range(5)] + [MultipleChoice("Q0?", ("x", "y"), 0)]
    prefixes = fewshot_prefixes(examples(3), 3, Prompting(num_fewshot=5, seed=0), "t", shots=train)
    assert sorted(prefixes[0].split("\n\n")[:5]) == [f"T{i}? yes{i}" for i in range(5)]  # not Q0?, its twin
    assert all("Q0? x" in p for p in prefixes[1:])  # 5 of the other 6: Q0? is one of them (seed 0)
    with pytest.raises(ConfigError, match=r"only 5 of the 6 few-shot examples differ"):
        fewshot_prefixes(examples(3), 1, Prompting(num_fewshot=6), "t", shots=train)
    assert fewshot_prefixes(examples(1), 1, Prompting(num_fewshot=1), "t", shots=examples(1)[:0] + train[:1]) == [
        "T0? yes0\n\n"]  # a one-example task: with another file, k may be as large as that file
