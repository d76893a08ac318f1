"""Task-file readers: each layout on a small file, layout detection, and errors that name the line."""

import bz2
import json
from pathlib import Path

import pytest

from pretrainlab.errors import DataError
from pretrainlab.eval.tasks.examples import Continuation, MinimalPair, MultipleChoice, Schema, Text
from pretrainlab.eval.tasks.formats import FORMATS, detect_format, hellaswag_clean


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read(fmt: str, path: Path, **options) -> list:
    return FORMATS.get(fmt).read(path, options)


MC = {"query": "Question: 2+2?", "choices": ["3", "4", "5"], "gold": 1}
HS_TASK = ["Cooking: A man cracks an egg. he", "2", "eats it.", "throws it.", "fries it [title] now.", "sings."]


def test_llm_foundry_layouts(tmp_path):
    mc = read("multiple_choice", jsonl(tmp_path / "mc.jsonl", [MC, "", {**MC, "gold": 0}]))  # blank lines skipped
    assert mc == [MultipleChoice("Question: 2+2?", ("3", "4", "5"), 1, f"{tmp_path}/mc.jsonl:1"),
                  MultipleChoice("Question: 2+2?", ("3", "4", "5"), 0, f"{tmp_path}/mc.jsonl:3")]
    sc = read("schema", jsonl(tmp_path / "s.jsonl", [{"context_options": ["A so A", "A so B"], "continuation": "won.",
                                                      "gold": 1}]))
    assert sc == [Schema(("A so A", "A so B"), "won.", 1, f"{tmp_path}/s.jsonl:1")]
    lm = read("language_modeling", jsonl(tmp_path / "l.jsonl", [{"context": "1 + 1 =", "continuation": " 2"}]))
    assert lm == [Continuation("1 + 1 =", " 2", f"{tmp_path}/l.jsonl:1")]
    mp = read("minimal_pairs", jsonl(tmp_path / "b.jsonl", [{"sentence_good": "Cats run.", "sentence_bad": "Cats runs.",
                                                            "UID": "x"}]))
    assert mp == [MinimalPair("Cats run.", "Cats runs.", f"{tmp_path}/b.jsonl:1")]


def test_hellaswag_text_plain_and_bz2(tmp_path):
    plain = tmp_path / "hs.txt"
    plain.write_text("\n".join(HS_TASK * 2) + "\n", encoding="utf-8")
    packed = tmp_path / "hs.txt.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    for path in (plain, packed):
        ex = read("hellaswag_text", path)
        assert len(ex) == 2 and ex[1].where == f"{path}:7"
        assert ex[0] == MultipleChoice("Cooking: A man cracks an egg. he",
                                       ("eats it.", "throws it.", "fries it. now.", "sings."), 2, f"{path}:1")
        assert detect_format(path) == "hellaswag_text"


def test_hellaswag_clean_follows_lm_eval():
    assert hellaswag_clean(" Fix a bike [title] Take the wheel [step] off.  Then ") == "Fix a bike. Take the wheel off. Then"


def lm_eval_hellaswag(doc: dict) -> tuple[str, list[str]]:
    """lm-evaluation-harness's hellaswag/utils.py (0.4), copied: the query and choices it scores."""
    import re

    def preprocess(text):
        text = text.strip()
        text = text.replace(" [title]", ". ")
        text = re.sub("\\[.*?\\]", "", text)
        text = text.replace("  ", " ")
        return text

    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return preprocess(doc["activity_label"] + ": " + ctx), [preprocess(e) for e in doc["endings"]]


def test_hellaswag_jsonl_builds_lm_evals_query(tmp_path):
    rows = [
        {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "ctx": "ignored",
         "endings": ["a", "b", "c", "d"], "label": "3"},
        # WikiHow rows: [title]/[step] tags, an empty ctx_b (a trailing space lm-eval strips), spaced endings
        {"activity_label": "Home and Garden", "ctx_a": "[header] How to fix a tap [title] Turn off the water.",
         "ctx_b": "", "endings": [" [step] Open  it.", "Close it [title] now.", "x ", "y"], "label": 0},
        {"activity_label": "Sports", "ctx_a": "Two men play.", "ctx_b": "tHEY run", "endings": ["a", "b"],
         "label": 1},
    ]
    got = read("hellaswag_jsonl", jsonl(tmp_path / "h.jsonl", rows))
    assert got[0] == MultipleChoice("Cooking: A man cracks an egg. He", ("a", "b", "c", "d"), 3,
                                    f"{tmp_path}/h.jsonl:1")
    for ex, row in zip(got, rows):
        query, choices = lm_eval_hellaswag(row)
        assert (ex.context, list(ex.choices)) == (query, choices)
    assert got[1].context == "Home and Garden: How to fix a tap. Turn off the water."


def test_hellaswag_text_cannot_capitalise_ctx_b(tmp_path):
    """The text layout's context is "label: ctx_a ctx_b" already joined: it gets the rest of lm-eval's
    preprocessing, but ctx_b keeps its lowercase first letter (documented; the jsonl matches lm-eval)."""
    doc = {"activity_label": "Cooking", "ctx_a": "A man [title] cracks an  egg.", "ctx_b": "he",
           "endings": ["eats [step] it.", "b", "c", "d"], "label": "0"}
    p = tmp_path / "hs.txt"
    p.write_text("\n".join([f"Cooking: {doc['ctx_a']} {doc['ctx_b']}", "0", *doc["endings"]]) + "\n")
    (ex,) = read("hellaswag_text", p)
    query, choices = lm_eval_hellaswag(doc)
    assert list(ex.choices) == choices
    assert ex.context == "Cooking: A man. cracks an egg. he" and query == "Cooking: A man. cracks an egg. He"


def test_piqa_original_layout(tmp_path):
    q = jsonl(tmp_path / "valid.jsonl", [{"goal": "Open a jar", "sol1": "twist", "sol2": "bite"}] * 2)
    (tmp_path / "valid-labels.lst").write_text("0\n1\n")
    ex = read("piqa", q)
    assert ex[0] == MultipleChoice("Question: Open a jar", ("twist", "bite"), 0, f"{q}:1") and ex[1].gold == 1
    assert detect_format(q) == "piqa"
    (tmp_path / "valid-labels.lst").write_text("0\n")
    with pytest.raises(DataError, match="has 1 labels but .* has 2 questions"):
        read("piqa", q)
    (tmp_path / "valid-labels.lst").write_text("0\n2\n")
    with pytest.raises(DataError, match=r"valid-labels.lst:2: a PIQA label must be 0 or 1"):
        read("piqa", q)
    (tmp_path / "valid-labels.lst").unlink()
    with pytest.raises(DataError, match="PIQA answers .* missing"):
        read("piqa", q)


def test_arc_original_and_hf_layouts(tmp_path):
    ai2 = {"question": {"stem": "Sky color?", "choices": [{"text": "red", "label": "A"}, {"text": "blue", "label": "B"}]},
           "answerKey": "B"}
    hf = {"question": "Sky color?", "choices": {"text": ["red", "blue"], "label": ["1", "2"]}, "answerKey": "2"}
    p = jsonl(tmp_path / "arc.jsonl", [ai2, hf])
    assert detect_format(p) == "arc"
    assert [(e.context, e.choices, e.gold) for e in read("arc", p)] == [("Question: Sky color?", ("red", "blue"), 1)] * 2
    with pytest.raises(DataError, match=r"arc.jsonl:1: answerKey 'C' is not one of"):
        read("arc", jsonl(tmp_path / "arc.jsonl", [{**ai2, "answerKey": "C"}]))


def test_text_is_read_line_by_line(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("héllo\nworld\n\n", encoding="utf-8")
    assert read("text", p) == [Text("héllo", f"{p}:1"), Text("world", f"{p}:2")]  # trailing blank lines dropped
    assert read("text", p, max_bytes=3) == [Text("hé", f"{p}:1")]  # never half a character
    assert read("text", p, max_bytes=8) == [Text("héllo", f"{p}:1"), Text("w", f"{p}:2")]  # 6 bytes + "\n" + 1
    assert detect_format(p) == "text"
    p.write_text("\n \n")
    with pytest.raises(DataError, match="holds no text"):
        read("text", p)


@pytest.mark.parametrize(
    "fmt, rows, message",
    [
        ("multiple_choice", [MC, '{"query": "x", "choices": ["a", "b"], "gold": 1'], r"x.jsonl:2: not valid JSON"),
        ("multiple_choice", [MC, MC, {"query": "q", "choices": ["a", "b"]}], r"x.jsonl:3: missing key 'gold'"),
        ("multiple_choice", [{**MC, "gold": 3}], r"x.jsonl:1: 'gold' = 3 is out of range: there are 3 choices"),
        ("multiple_choice", [{**MC, "gold": -1}], r"x.jsonl:1: 'gold' = -1 is out of range"),
        ("multiple_choice", [{**MC, "gold": True}], r"x.jsonl:1: 'gold' must be"),
        ("multiple_choice", [{**MC, "choices": ["only"]}], r"x.jsonl:1: 'choices' must be a list of at least 2"),
        ("multiple_choice", ["[1, 2]"], r"x.jsonl:1: expected a JSON object, got list"),
        ("schema", [{"context_options": ["a", "b"], "continuation": "c", "gold": 2}], r"x.jsonl:1: 'gold' = 2 is out"),
        ("language_modeling", [{"context": "a"}], r"x.jsonl:1: missing key 'continuation'"),
        ("language_modeling", [{"context": "a", "continuation": ""}], r"x.jsonl:1: 'continuation' is empty"),
        ("minimal_pairs", [{"sentence_good": "a"}], r"x.jsonl:1: missing key 'sentence_bad'"),
        ("hellaswag_jsonl", [{"ctx": "c", "endings": ["a", "b"], "label": ""}], r"x.jsonl:1: 'label' is empty"),
        ("multiple_choice", [], r"x.jsonl holds no examples"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, fmt, rows, message):
    with pytest.raises(DataError, match=message):
        read(fmt, jsonl(tmp_path / "x.jsonl", rows))


def test_malformed_hellaswag_text_names_the_line(tmp_path):
    p = tmp_path / "hs.txt"
    p.write_text("\n".join(HS_TASK + HS_TASK[:5]) + "\n")
    with pytest.raises(DataError, match=r"hs.txt:11: the file has 11 lines, not a multiple of 6.*from line 7"):
        read("hellaswag_text", p)
    p.write_text("\n".join(HS_TASK + [HS_TASK[0], "x"] + HS_TASK[2:]) + "\n")
    with pytest.raises(DataError, match=r"hs.txt:8: expected the gold index"):
        read("hellaswag_text", p)
    p.write_text("\n".join(HS_TASK[:1] + ["7"] + HS_TASK[2:]) + "\n")
    with pytest.raises(DataError, match=r"hs.txt:2: 'gold index' = 7 is out of range"):
        read("hellaswag_text", p)


def test_missing_file_and_bad_bytes(tmp_path):
    with pytest.raises(DataError, match=r"task file .*nope.jsonl does not exist"):
        read("multiple_choice", tmp_path / "nope.jsonl")
    p = tmp_path / "bad.jsonl"
    p.write_bytes(json.dumps(MC).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not UTF-8"):
        read("multiple_choice", p)


def test_detection_by_keys(tmp_path):
    cases = {
        "multiple_choice": MC,
        "schema": {"context_options": ["a", "b"], "continuation": "c", "gold": 0},
        "language_modeling": {"context": "a", "continuation": "b"},
        "minimal_pairs": {"sentence_good": "a", "sentence_bad": "b"},
        "hellaswag_jsonl": {"ctx": "a", "endings": ["b", "c"], "label": 0},
    }
    for fmt, row in cases.items():
        assert detect_format(jsonl(tmp_path / f"{fmt}.jsonl", [row])) == fmt
    with pytest.raises(DataError, match=r"odd.jsonl:1: cannot tell the task format from the keys \['x'\]"):
        detect_format(jsonl(tmp_path / "odd.jsonl", [{"x": 1}]))
