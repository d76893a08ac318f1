"""End to end on a tiny trained run: the `task_eval` callback adds task scores to the evaluation lines of
metrics.jsonl, and `pretrainlab eval RUN --tasks ...` prints a table, writes tasks-step<N>.json and appends
an `{"event": "tasks"}` line."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_prepared, markov_docs, tiny_run_config, train_run

from pretrainlab.cli import main
from pretrainlab.errors import DataError
from pretrainlab.train.metrics import read_metrics

from .task_helpers import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

MC = [{"query": f"abc{i}", "choices": ["def", "xyz", "qqq"], "gold": i % 3} for i in range(6)]


def task_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt").write_text("abcdefghij" * 10)
    return {
        "mc": write_jsonl(folder / "mc.jsonl", MC),
        "lambada": write_jsonl(folder / "lambada.jsonl", [{"context": "abcd", "continuation": "efg"}] * 3),
        "text": folder / "t.txt",
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A tiny run trained with tasks scored at steps 5 and 10 (the callback), and its task files."""
    tmp = tmp_path_factory.mktemp("tasks_run")
    rng = np.random.default_rng(0)
    data = make_prepared(tmp / "prepared", train={"m": markov_docs(rng, 60)}, val={"m": markov_docs(rng, 6)})
    files = task_files(tmp / "tasks")
    cfg = tiny_run_config(
        tmp / "runs", data, eval={"every": 5, "max_tokens_per_domain": 256, "batch_size": 8},
        tasks={"tasks": {"mc": {"path": str(files["mc"]), "format": "multiple_choice"}, "lambada": str(files["lambada"]),
                         "text": str(files["text"])}, "limit": 4},
    )
    return train_run(cfg), files


def test_callback_adds_task_scores_to_evaluation_lines(trained):
    run, _ = trained
    evals = [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r and "event" not in r]
    assert [r["step"] for r in evals] == [5, 10]
    for r in evals:
        assert r["task/mc/n"] == 4  # limit 4 of 6
        assert 0 <= r["task/mc/acc"] <= 1 and 0 <= r["task/mc/acc_norm"] <= 1
        assert r["task/lambada/n"] == 3 and r["task/lambada/ppl"] > 1
        assert r["task/text/bpb"] > 0 and r["task/text/n"] == 100
    assert evals[0]["task/text/loss"] != evals[1]["task/text/loss"]  # scored with the weights of each step


def test_eval_tasks_cli(trained, capsys):
    run, files = trained
    args = ["eval", str(run), "--tasks", f"arc_easy={files['mc']}", str(files["lambada"]), f"text={files['text']}",
            "--limit", "5", "--num-fewshot", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "arc_easy" in out and "acc_norm" in out and "1-shot" in out
    record = json.loads((run / "tasks-step10.json").read_text())
    assert record["step"] == 10 and record["num_fewshot"] == 1 and record["limit"] == 5
    assert record["tasks"]["arc_easy"]["scored"] == 5 and record["tasks"]["arc_easy"]["examples"] == 6
    assert record["tasks"]["lambada"]["format"] == "language_modeling"
    m = record["metrics"]
    assert set(m) == {"task/arc_easy/acc", "task/arc_easy/acc_norm", "task/arc_easy/n", "task/lambada/acc",
                      "task/lambada/ppl", "task/lambada/n", "task/text/loss", "task/text/ppl", "task/text/bpb",
                      "task/text/n"}
    last = read_metrics(run / "metrics.jsonl")[-1]
    end = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "end"][0]
    assert last == {"event": "tasks", "step": 10, "tokens": end["tokens"], **m}
    assert not list(run.glob("eval-*.json"))  # --tasks alone skips the validation pass
    assert main(args + ["--val"]) == 0
    assert list(run.glob("eval-*.json"))


def test_cli_errors(trained, capsys):
    run, files = trained
    assert main(["eval", str(run), "--tasks", "arc_esy=x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'arc_esy'" in err and "arc_easy" in err and "hellaswag" in err
    assert main(["eval", str(run), "--tasks", f"winogrande={files['mc']}"]) == 2
    assert "looks like a 'multiple_choice' file" in capsys.readouterr().err
    assert main(["eval", str(run), "--tasks", str(files["mc"]), "--num-fewshot", "9"]) == 2
    assert "num_fewshot=9 needs at least 10 examples" in capsys.readouterr().err
    assert main(["eval", str(run), "--tasks", str(files["mc"]), "--limit", "0"]) == 2


def test_bad_task_file_stops_training_before_the_first_step(tmp_path):
    rng = np.random.default_rng(1)
    data = make_prepared(tmp_path / "prepared", train={"m": markov_docs(rng, 10)}, val={"m": markov_docs(rng, 2)})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MC[0]) + "\n" + '{"query": "q", "choices": ["a", "b"]}\n')
    cfg = tiny_run_config(tmp_path / "runs", data, tasks={"tasks": {"arc_easy": str(bad)}})
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing key 'gold'"):
        train_run(cfg)
    assert not [r for r in read_metrics(tmp_path / "runs" / "tiny" / "metrics.jsonl") if "loss" in r]
