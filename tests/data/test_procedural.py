"""Procedural generators: each a pure function of (seed, index), and every string valid for its language
(balanced and depth-limited Dyck, per-type balanced shuffled Dyck, sorted sorts, correct set operations
and modular sums, a^n b^n, strings the random DFA accepts)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pretrainlab.data.procedural import GENERATORS, build_generator, load_builtin_generators
from pretrainlab.data.procedural.dyck import (
    closing_sequence,
    is_dyck,
    nesting_depth,
    pairs_of,
    split_symbols,
)
from pretrainlab.data.procedural.formal import accepted_counts
from pretrainlab.data.procedural.haystack import text_sentences
from pretrainlab.errors import ConfigError, DataError

N = 300


def docs(name: str, options: dict | None = None, seed: int = 0, n: int = N) -> list[str]:
    return list(build_generator(name, options or {}, seed).documents(0, n))


def test_every_generator_is_registered_and_a_pure_function_of_seed_and_index() -> None:
    load_builtin_generators()
    assert GENERATORS.names() == ["anbn", "copy", "dyck", "haystack", "modular_arithmetic", "regular", "reverse",
                                  "set_ops", "shuffled_dyck", "sort"]
    for name in GENERATORS.names():
        full = docs(name, n=40)
        assert full == docs(name, n=40), name  # same seed, same corpus
        assert docs(name, seed=1, n=40) != full, name  # another seed, another corpus
        # any slice alone equals that slice of the whole (document i depends on (seed, i) only)
        assert list(build_generator(name, {}, 0).documents(25, 40)) == full[25:40], name
        assert build_generator(name, {}, 0).document(7) == full[7], name
        assert all(d.strip() for d in full), name


@pytest.mark.parametrize("k,max_depth,sep", [(1, 3, " "), (2, 16, " "), (4, 2, ""), (30, 5, " ")])
def test_dyck_strings_are_balanced_within_the_depth_limit_and_length_range(k: int, max_depth: int, sep: str) -> None:
    out = docs("dyck", {"k": k, "max_depth": max_depth, "separator": sep, "min_length": 10, "max_length": 41})
    symbols = [split_symbols(d, sep) for d in out]
    alphabet = {s for pair in pairs_of(k) for s in pair}
    assert all(is_dyck(s, k) for s in symbols)
    assert all(nesting_depth(s, k) <= max_depth for s in symbols)
    assert all(10 <= len(s) <= 40 and len(s) % 2 == 0 for s in symbols)
    assert set().union(*map(set, symbols)) == alphabet  # every type is used, nothing else
    if max_depth <= 5:  # a small limit is reached (and never passed)
        assert max(nesting_depth(s, k) for s in symbols) == max_depth


def test_dyck_validity_checks_catch_bad_strings() -> None:
    assert is_dyck(list("([]){}"), 3) and not is_dyck(list("([)]"), 2) and not is_dyck(list("(("), 1)
    assert not is_dyck(list("(x)"), 1) and nesting_depth(list("(([]))()"), 2) == 3
    assert closing_sequence(list("([{}("), 3) == [")", "]", ")"]
    with pytest.raises(ValueError):
        closing_sequence(list("(]"), 2)


def test_shuffled_dyck_balances_each_type_but_does_not_always_nest() -> None:
    k, out = 3, docs("shuffled_dyck", {"k": 3, "max_depth": 6, "min_length": 2, "max_length": 12})
    pairs = pairs_of(k)
    nested = 0
    for d in out:
        symbols = split_symbols(d, " ")
        counts = Counter(symbols)
        assert all(counts[o] == counts[c] for o, c in pairs)  # balanced per type
        open_now = Counter()
        for s in symbols:  # never closes a type that is not open; at most max_depth open
            for o, c in pairs:
                open_now[o] += (s == o) - (s == c)
            assert min(open_now.values()) >= 0 and sum(open_now.values()) <= 6
        nested += is_dyck(symbols, k)
    assert 0 < nested < len(out)  # short ones often happen to nest; not all
    long = [d.split() for d in docs("shuffled_dyck", {"k": 3})]
    assert sum(is_dyck(s, k) for s in long) < len(long) // 10  # long ones almost never


def test_shuffled_tokens_control_keeps_the_counts_and_loses_the_structure() -> None:
    plain = docs("dyck", {"k": 2})
    shuffled = docs("dyck", {"k": 2, "shuffle_tokens": True})
    assert [Counter(a.split()) for a in plain] == [Counter(b.split()) for b in shuffled]
    assert sum(is_dyck(s.split(), 2) for s in shuffled) < len(shuffled) // 10


def _lines(name: str, options: dict) -> list[str]:
    return [line for d in docs(name, options, n=100) for line in d.split("\n")]


def test_copy_reverse_and_sort_outputs_are_right() -> None:
    for line in _lines("copy", {"per_document": 3}):
        x, y = line.split(" | ")
        assert x == y and 4 <= len(x.split()) <= 16
    for line in _lines("reverse", {"alphabet": "digits"}):
        x, y = line.split(" ~ ")
        assert y.split() == x.split()[::-1]
    for line in _lines("sort", {"alphabet": "numbers", "vocab": 1000}):
        x, y = line.split(" -> ")
        assert [int(v) for v in y.split()] == sorted(int(v) for v in x.split())  # by value, not as text
    for line in _lines("sort", {"separator": ""}):
        x, y = line.split(" -> ")
        assert list(y) == sorted(x) and set(x) <= set("abcdefghijklmnopqrstuvwxyz")


def test_set_operations_are_right() -> None:
    seen = Counter()
    for line in _lines("set_ops", {"universe": 12, "per_document": 4}):
        m = re.fullmatch(r"\{([\d ]*)\} (union|intersection|difference) \{([\d ]*)\} = \{([\d ]*)\}", line)
        assert m, line
        a, op, b, result = set(map(int, m[1].split())), m[2], set(map(int, m[3].split())), m[4]
        want = {"union": a | b, "intersection": a & b, "difference": a - b}[op]
        assert [int(v) for v in result.split()] == sorted(want)
        assert len(m[1].split()) == len(a) <= 6  # operands are sets: no repeats
        seen[op] += 1
    assert set(seen) == {"union", "intersection", "difference"}


def test_modular_arithmetic_is_right() -> None:
    for line in _lines("modular_arithmetic", {"modulus": 13, "operations": ["+", "-", "*", "/"]}):
        a, op, b, mod, p, eq, c = line.split()
        a, b, p, c = int(a), int(b), int(p), int(c)
        assert (mod, eq, p) == ("mod", "=", 13) and 0 <= min(a, b, c) and max(a, b, c) < 13
        if op == "/":
            assert (c * b) % p == a
        else:
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op] % p


def test_formal_languages() -> None:
    for d in docs("anbn", {"symbols": "abc", "max_n": 9}):
        n = len(d.split()) // 3
        assert d.split() == ["a"] * n + ["b"] * n + ["c"] * n and 1 <= n <= 9
    gen = build_generator("regular", {"states": 5, "alphabet": 3, "min_length": 4, "max_length": 20}, 3)
    out = list(gen.documents(0, N))
    assert all(gen.dfa.accepts("".join(d.split())) and 4 <= len(d.split()) <= 20 for d in out)
    # the language is not everything: some strings of these lengths are rejected
    assert accepted_counts(gen.dfa, 20)[20][0] < 3**20
    other = build_generator("regular", {"states": 5, "alphabet": 3, "min_length": 4, "max_length": 20}, 4)
    assert other.dfa != gen.dfa  # the automaton comes from the seed


@pytest.mark.parametrize("name,options,field,words", [
    ("dyck", {"k": 0}, "sources.3.options.k", "greater than or equal to 1"),
    ("dyck", {"min_length": 9, "max_length": 9}, "sources.3.options", "even"),
    ("dyck", {"depth": 3}, "sources.3.options.depth", "not an option"),
    ("sort", {"alphabet": "emoji"}, "sources.3.options.alphabet", "letters"),
    ("sort", {"alphabet": "numbers", "separator": ""}, "sources.3.options", "separator"),
    ("set_ops", {"max_size": 30}, "sources.3.options", "universe"),
    ("modular_arithmetic", {"modulus": 12, "operations": ["/"]}, "sources.3.options", "prime"),
    ("regular", {"min_length": 9, "max_length": 3}, "sources.3.options", "min_length"),
])
def test_bad_options_name_the_field(name: str, options: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_generator(name, options, 0, where="sources.3.options")
    assert field in e.value.message and words in e.value.message


def test_unknown_generator_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"sources.1.generator='dyk'.*did you mean 'dyck'"):
        build_generator("dyk", {}, 0, where="sources.1.options")


def test_text_filler_sentences(tmp_path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("One two three four. Short one.\nA  third   sentence here! ok\n")
    assert text_sentences(path) == ["One two three four.", "A third sentence here!"]
    with pytest.raises(DataError, match="does not exist"):
        text_sentences(tmp_path / "missing.txt")
