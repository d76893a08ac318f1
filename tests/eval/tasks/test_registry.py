"""Task names, --tasks words and config entries -> TaskSpecs; unknown names list the known ones."""

import json

import pytest

from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.tasks import TASKS, TaskDef, parse_task_args, resolve_tasks
from pretrainlab.eval.tasks.examples import Continuation
from pretrainlab.eval.tasks.formats import FORMATS, Format

MC = {"query": "q", "choices": ["a", "b"], "gold": 0}


def jsonl(path, row):
    path.write_text(json.dumps(row) + "\n")
    return str(path)


BUILTINS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "copa", "openbookqa", "boolq", "winogrande", "lambada",
            "blimp", "text", "multiple_choice", "schema", "language_modeling", "minimal_pairs"]


def test_builtin_names():
    assert set(BUILTINS) <= set(TASKS.names())


def test_unknown_task_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_tasks({"arc_esy": jsonl(tmp_path / "a.jsonl", MC)})
    msg = str(e.value)
    assert "unknown task 'arc_esy'; did you mean 'arc_easy'?" in msg
    assert all(name in msg for name in BUILTINS)
    with pytest.raises(ConfigError, match=r"unknown task 'nosuch'.*known: .*arc_easy"):
        parse_task_args(["nosuch"])


def test_cli_words(tmp_path):
    arc = jsonl(tmp_path / "arc_easy.jsonl", MC)
    mine = jsonl(tmp_path / "mine.jsonl", MC)
    assert parse_task_args([f"arc_challenge={arc}", arc, mine, "blimp", f"quiz={mine}"]) == {
        "arc_challenge": arc, "arc_easy": arc, "mine": {"path": mine, "format": "auto"}, "blimp": None,
        "quiz": {"path": mine, "format": "auto"}}  # an unregistered NAME=PATH: the layout is read from the file
    (spec,) = resolve_tasks(parse_task_args([f"quiz={mine}"]))
    assert (spec.name, spec.format, spec.scorer) == ("quiz", "multiple_choice", "multiple_choice")
    with pytest.raises(ConfigError, match="names the task 'arc_easy' twice"):
        parse_task_args([arc, f"arc_easy={mine}"])


def test_specs_take_layout_options_and_defaults(tmp_path):
    arc = jsonl(tmp_path / "arc_easy.jsonl", MC)
    (spec,) = resolve_tasks({"arc_easy": arc})
    assert (spec.name, spec.format, spec.scorer, spec.path) == ("arc_easy", "multiple_choice", "multiple_choice", arc)
    assert spec.options == {"delimiter": "\nAnswer: "}
    (spec,) = resolve_tasks({"mine": {"path": arc, "format": "auto", "num_fewshot": 2, "delimiter": " => "}})
    assert spec.format == "multiple_choice" and spec.options == {"num_fewshot": 2, "delimiter": " => "}
    (spec,) = resolve_tasks(parse_task_args([jsonl(tmp_path / "b.jsonl", {"sentence_good": "a", "sentence_bad": "b"})]))
    assert (spec.name, spec.scorer) == ("b", "minimal_pairs")


def test_hellaswag_text_file_is_read_in_its_layout(tmp_path):
    short = tmp_path / "hs.txt"
    short.write_text("ctx\n1\na\nb\nc\nd\n")  # too short to detect: the task's text layout is used
    assert resolve_tasks({"hellaswag": str(short)})[0].format == "hellaswag_text"
    assert resolve_tasks({"text": str(short)})[0].format == "text"


def test_errors_name_the_task(tmp_path):
    mc = jsonl(tmp_path / "mc.jsonl", MC)
    with pytest.raises(DataError, match=r"task 'winogrande': .*mc.jsonl looks like a 'multiple_choice' file, "
                                        r"but winogrande reads schema"):
        resolve_tasks({"winogrande": mc})
    with pytest.raises(ConfigError, match=r"tasks.arc_easy: unknown option\(s\) 'delimter'"):
        resolve_tasks({"arc_easy": {"path": mc, "delimter": " "}})
    with pytest.raises(ConfigError, match=r"tasks.x.format='mcq' is not a known task file format"):
        resolve_tasks({"x": {"path": mc, "format": "mcq"}})
    with pytest.raises(ConfigError, match=r"task 'arc_easy' needs a file"):
        resolve_tasks({"arc_easy": None})
    with pytest.raises(DataError, match=r"task 'arc_easy': .*nope.jsonl does not exist"):
        resolve_tasks({"arc_easy": str(tmp_path / "nope.jsonl")})


def test_recipes_register_generated_tasks(tmp_path):
    """A recipe's task with no file: its own layout generates the examples (issue 8's synthetic tasks)."""

    def make(path, options):
        return [Continuation("(()", ")", f"generated:{i}") for i in range(int(options.get("count", 3)))]

    name = "test_brackets"
    if name not in FORMATS:
        FORMATS.register(name)(Format(make, "generated brackets", "language_modeling", needs_file=False,
                                      options=("count",)))
        TASKS.register(name)(TaskDef((name,), "bracket completion", {"count": 4}))
    (spec,) = resolve_tasks({name: None})
    assert (spec.path, spec.scorer, spec.options) == (None, "language_modeling", {"count": 4})
    from pretrainlab.data.tokenizer import TextTokenizer
    from pretrainlab.eval.tasks import load_tasks

    (loaded,) = load_tasks([spec], TextTokenizer.bytes())
    assert loaded.n_scored == 4


@pytest.mark.parametrize("option, value, message", [
    ("num_fewshot", -1, r"tasks.quiz.num_fewshot must be 0 or more, got -1"),
    ("limit", 0, r"tasks.quiz.limit must be 1 or more, got 0"),
    ("limit", "all", r"tasks.quiz.limit must be an integer, got 'all'"),
    ("seed", 1.5, r"tasks.quiz.seed must be an integer"),
    ("num_fewshot", True, r"tasks.quiz.num_fewshot must be an integer"),
    ("delimiter", 3, r"tasks.quiz.delimiter must be a string"),
    ("fewshot_path", ["a"], r"tasks.quiz.fewshot_path must be a string"),
])
def test_task_options_are_checked(tmp_path, option, value, message):
    mc = jsonl(tmp_path / "mc.jsonl", MC)
    with pytest.raises(ConfigError, match=message):
        resolve_tasks({"quiz": {"path": mc, "format": "multiple_choice", option: value}})


def test_run_wide_settings_are_checked(tmp_path):
    from pretrainlab.data.tokenizer import TextTokenizer
    from pretrainlab.eval.tasks import load_tasks

    specs = resolve_tasks({"quiz": {"path": jsonl(tmp_path / "mc.jsonl", MC), "format": "multiple_choice"}})
    with pytest.raises(ConfigError, match=r"^limit must be 1 or more, got 0"):
        load_tasks(specs, TextTokenizer.bytes(), limit=0)
    with pytest.raises(ConfigError, match=r"^num_fewshot must be 0 or more, got -1"):
        load_tasks(specs, TextTokenizer.bytes(), num_fewshot=-1)


def test_fewshot_path_draws_the_shots_from_another_file(tmp_path):
    from pretrainlab.data.tokenizer import TextTokenizer
    from pretrainlab.eval.tasks import load_tasks

    tok = TextTokenizer.bytes()
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"query": f"test{i}", "choices": ["a", "b"], "gold": 0}) + "\n"
                            for i in range(2)))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"query": f"train{i}", "choices": ["c", "d"], "gold": 1}) + "\n"
                             for i in range(3)))
    specs = resolve_tasks({"quiz": {"path": str(test), "format": "multiple_choice", "fewshot_path": str(train)}})
    (loaded,) = load_tasks(specs, tok, num_fewshot=3)  # 3 shots: more than the task's own file could give
    contexts = [bytes(ctx).decode() for ctx, _ in loaded.encoded.requests]
    assert sorted(contexts[0].split("\n\n")[:3]) == ["train0 d", "train1 d", "train2 d"]
    assert all(c.endswith(f"test{i // 2}") for i, c in enumerate(contexts)) and loaded.n_scored == 2
