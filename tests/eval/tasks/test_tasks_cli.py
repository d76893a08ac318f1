"""End to end on a tiny trained run: the `task_eval` callback adds task scores to the evaluation lines of
metrics.jsonl (and the end line), stops a run whose tasks cannot be scored, and `pretrainlab eval RUN --tasks`
prints a table, merges its results into tasks-step<N>.json and appends an `{"event": "tasks"}` line."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import make_prepared, markov_docs, tiny_run_config, train_run

from pretrainlab.cli import main
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.tasks.callback import TaskEvalCallback
from pretrainlab.eval.tasks.cli import append_jsonl, write_json_atomic
from pretrainlab.train.metrics import read_metrics
from pretrainlab.train.trainer import Trainer

from .task_helpers import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

MC = [{"query": f"abc{i}", "choices": ["def", "xyz", "qqq"], "gold": i % 3} for i in range(6)]


def task_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt").write_text("abcdefghij\n" * 10)
    return {
        "mc": write_jsonl(folder / "mc.jsonl", MC),
        "lambada": write_jsonl(folder / "lambada.jsonl",
                               [{"context": f"abcd{i}", "continuation": "efg"} for i in range(3)]),
        "text": folder / "t.txt",
    }


def prepared(tmp: Path, seed: int = 0, n_train: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    return make_prepared(tmp / "prepared", train={"m": markov_docs(rng, n_train)}, val={"m": markov_docs(rng, 6)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A tiny run trained with tasks scored at steps 5 and 10 (the callback), and its task files."""
    tmp = tmp_path_factory.mktemp("tasks_run")
    data = prepared(tmp)
    files = task_files(tmp / "tasks")
    cfg = tiny_run_config(
        tmp / "runs", data, eval={"every": 5, "max_tokens_per_domain": 256, "batch_size": 8},
        tasks={"tasks": {"mc": {"path": str(files["mc"]), "format": "multiple_choice"}, "lambada": str(files["lambada"]),
                         "text": str(files["text"])}, "limit": 4},
    )
    return train_run(cfg), files


def test_callback_adds_task_scores_to_evaluation_and_end_lines(trained):
    run, _ = trained
    lines = read_metrics(run / "metrics.jsonl")
    evals = [r for r in lines if "val_loss" in r and "event" not in r]
    assert [r["step"] for r in evals] == [5, 10]
    for r in evals:
        assert r["task/mc/n"] == 4  # limit 4 of 6
        assert 0 <= r["task/mc/acc"] <= 1 and 0 <= r["task/mc/acc_norm"] <= 1
        assert r["task/lambada/n"] == 3 and r["task/lambada/ppl"] > 1
        assert r["task/text/bpb"] > 0 and r["task/text/n"] == 43  # limit: 4 lines of 10 bytes, 3 newlines
    assert evals[0]["task/text/loss"] != evals[1]["task/text/loss"]  # scored with the weights of each step
    (end,) = [r for r in lines if r.get("event") == "end"]
    assert {k: v for k, v in end.items() if k.startswith("task/")} == {
        k: v for k, v in evals[1].items() if k.startswith("task/")}  # the final evaluation's task scores


def test_eval_tasks_cli_merges_results_per_task_and_settings(trained, capsys):
    run, files = trained
    out_json = run / "tasks-step10.json"
    out_json.unlink(missing_ok=True)
    args = ["eval", str(run), "--tasks", f"arc_easy={files['mc']}", str(files["lambada"]), f"text={files['text']}",
            "--limit", "5", "--num-fewshot", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "arc_easy" in out and "acc_norm" in out and "1-shot" in out
    record = json.loads(out_json.read_text())
    end = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "end"][0]
    assert record["step"] == 10 and record["tokens"] == end["tokens"]
    assert set(record["results"]) == {"arc_easy num_fewshot=1 limit=5 seed=1234",
                                      "lambada num_fewshot=1 limit=5 seed=1234", "text num_fewshot=1 limit=5 seed=1234"}
    arc = record["results"]["arc_easy num_fewshot=1 limit=5 seed=1234"]
    assert (arc["task"], arc["num_fewshot"], arc["limit"], arc["seed"]) == ("arc_easy", 1, 5, 1234)
    assert arc["scored"] == 5 and arc["examples"] == 6 and set(arc["metrics"]) == {"acc", "acc_norm", "n"}
    assert record["results"]["lambada num_fewshot=1 limit=5 seed=1234"]["format"] == "language_modeling"
    last = read_metrics(run / "metrics.jsonl")[-1]
    flat = {f"task/{e['task']}/{k}": v for e in record["results"].values() for k, v in e["metrics"].items()}
    assert last == {"event": "tasks", "step": 10, "tokens": end["tokens"], "num_fewshot": 1, "limit": 5,
                    "seed": 1234, **flat}
    assert not list(run.glob("eval-*.json"))  # --tasks alone skips the validation pass

    # another setting of one task, then the same setting again: earlier results survive, equal keys are replaced
    assert main(["eval", str(run), "--tasks", f"arc_easy={files['mc']}", "--limit", "3", "--val"]) == 0
    assert "with 3 earlier result(s) kept" in capsys.readouterr().out
    again = json.loads(out_json.read_text())["results"]
    assert len(again) == 4 and again["arc_easy num_fewshot=1 limit=5 seed=1234"] == arc
    assert again["arc_easy num_fewshot=0 limit=3 seed=1234"]["scored"] == 3
    assert list(run.glob("eval-*.json"))  # --val: the validation pass too
    assert main(["eval", str(run), "--tasks", f"arc_easy={files['mc']}", "--limit", "3"]) == 0
    assert len(json.loads(out_json.read_text())["results"]) == 4
    assert not list(run.glob(".tasks-step10.json.*"))  # no temporary file left behind


def test_tasks_line_after_a_torn_last_line(trained):
    run, files = trained
    metrics = run / "metrics.jsonl"
    before = read_metrics(metrics)
    with open(metrics, "a") as f:
        f.write('{"step": 11, "loss": 1.')  # a run killed mid-write
    assert main(["eval", str(run), "--tasks", f"mc={files['mc']}", "--limit", "2"]) == 0
    lines = metrics.read_text().splitlines()
    assert lines[-2] == '{"step": 11, "loss": 1.' and json.loads(lines[-1])["event"] == "tasks"
    assert read_metrics(metrics)[: len(before)] == before and len(read_metrics(metrics)) == len(before) + 1


def test_tokens_come_from_the_checkpoint_state(trained, tmp_path):
    """A checkpoint folder under another name, in a run whose log does not say the tokens: state.pt does."""
    run, files = trained
    tokens = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "end"][0]["tokens"]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "metrics.jsonl").write_text("")
    best = copy / "best"
    shutil.copytree(copy / "checkpoints" / "step-10", best)
    assert main(["eval", str(copy), "--checkpoint", str(best), "--tasks", f"mc={files['mc']}", "--limit", "2"]) == 0
    (line,) = read_metrics(copy / "metrics.jsonl")
    assert (line["step"], line["tokens"]) == (10, tokens)
    assert json.loads((copy / "tasks-step10.json").read_text())["tokens"] == tokens


def test_cli_errors(trained, capsys):
    run, files = trained
    assert main(["eval", str(run), "--tasks", "arc_esy=x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "x.jsonl does not exist" in err and "did you mean 'arc_easy'" in err
    assert main(["eval", str(run), "--tasks", f"winogrande={files['mc']}"]) == 2
    assert "looks like a 'multiple_choice' file" in capsys.readouterr().err
    assert main(["eval", str(run), "--tasks", str(files["mc"]), "--num-fewshot", "9"]) == 2
    assert "num_fewshot=9 needs at least 10 examples" in capsys.readouterr().err
    assert main(["eval", str(run), "--tasks", str(files["mc"]), "--limit", "0"]) == 2
    assert "--limit must be 1 or more" in capsys.readouterr().err


def test_unregistered_name_with_a_path_names_the_task(trained, capsys):
    run, files = trained
    assert main(["eval", str(run), "--tasks", f"my_quiz={files['mc']}", "--limit", "2"]) == 0
    assert "my_quiz" in capsys.readouterr().out
    assert "task/my_quiz/acc_norm" in read_metrics(run / "metrics.jsonl")[-1]


def test_a_malformed_later_line_fails_before_the_model_loads(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    bad = write_jsonl(tmp_path / "quiz.jsonl", MC[:2] + [{"query": "q", "choices": ["a", "b"]}])

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the task files were checked")

    monkeypatch.setattr("pretrainlab.eval.load.load_run", no_model)
    assert main(["eval", str(run), "--tasks", f"arc_easy={bad}"]) == 2
    assert "quiz.jsonl:3: missing key 'gold'" in capsys.readouterr().err


def test_bad_task_file_stops_training_before_the_first_step(tmp_path):
    data = prepared(tmp_path, seed=1, n_train=10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MC[0]) + "\n" + '{"query": "q", "choices": ["a", "b"]}\n')
    cfg = tiny_run_config(tmp_path / "runs", data, tasks={"tasks": {"arc_easy": str(bad)}})
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing key 'gold'"):
        train_run(cfg)
    assert not [r for r in read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl") if "loss" in r]


def test_a_continuation_longer_than_the_window_stops_training_before_the_first_step(tmp_path):
    data = prepared(tmp_path, seed=1, n_train=10)
    rows = MC[:3] + [{"query": "q", "choices": ["a", "b" * 40], "gold": 0}]  # " " + 40 bytes > seq_len 32
    cfg = tiny_run_config(tmp_path / "runs", data,
                          tasks={"tasks": {"arc_easy": str(write_jsonl(tmp_path / "long.jsonl", rows))}})
    with pytest.raises(DataError, match=r"long.jsonl:4: a continuation of 41 tokens does not fit the model's "
                                        r"window of 32"):
        train_run(cfg)
    assert not [r for r in read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl") if "loss" in r]


def test_a_scoring_failure_stops_the_run_with_a_checkpoint(tmp_path, monkeypatch, capsys):
    """An exception while scoring (only the main process scores) must stop every process alike: the callback
    asks the trainer to stop, which saves a checkpoint and returns exit code 1, instead of raising."""
    data = prepared(tmp_path, seed=2, n_train=20)
    files = task_files(tmp_path / "tasks")
    cfg = tiny_run_config(tmp_path / "runs", data, eval={"every": 4}, tasks={"tasks": {"text": str(files["text"])}})

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("pretrainlab.eval.tasks.evaluate.score_tasks", broken)
    trainer = Trainer(cfg)
    trainer.fit()
    assert trainer.exit_code == 1 and trainer.step == 4
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "step-4" / "COMPLETE").is_file()
    out = capsys.readouterr()
    assert "task evaluation failed at step 4: RuntimeError: CUDA out of memory (simulated)" in out.out + out.err
    lines = read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl")
    assert [r["step"] for r in lines if "val_loss" in r] == [4] and not [r for r in lines if r.get("event") == "end"]


def test_a_scoring_failure_at_the_final_evaluation_exits_non_zero(tmp_path, monkeypatch):
    data = prepared(tmp_path, seed=2, n_train=20)
    files = task_files(tmp_path / "tasks")
    cfg = tiny_run_config(tmp_path / "runs", data, train={"steps": 3},
                          tasks={"tasks": {"text": str(files["text"])}})

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("pretrainlab.eval.tasks.evaluate.score_tasks", broken)
    trainer = Trainer(cfg)
    trainer.fit()
    assert trainer.exit_code == 1
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "step-3" / "COMPLETE").is_file()


def test_fsdp_runs_are_refused():
    cfg = SimpleNamespace(parallel="fsdp", tasks=SimpleNamespace(tasks={"arc_easy": "x.jsonl"}))
    with pytest.raises(ConfigError, match="not supported with parallel=fsdp"):
        TaskEvalCallback().on_train_start(SimpleNamespace(cfg=cfg))


def test_result_files_are_strict_json(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"acc": math.nan, "ppl": [math.inf, 1.5]})
    assert json.loads(path.read_text()) == {"acc": None, "ppl": [None, 1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    log = tmp_path / "m.jsonl"
    append_jsonl(log, {"x": math.nan})
    append_jsonl(log, {"y": 1})
    assert log.read_text() == '{"x": null}\n{"y": 1}\n'
