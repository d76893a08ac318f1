"""`pretrainlab preselect score|train|select` end to end on real tiny runs: three runs trained for 2, 12 and
40 steps on planted chain text rank by their bits per byte on held-out chain text; the pool's chain documents
get predictive strength above its noise documents, and the selection keeps chain text. Bad input: one error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.cli import main
from tests.helpers import make_prepared, tiny_run_config, train_run
from tests.recipes.test_preselect import chain_text, noise_text

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preselect")
    rng = np.random.default_rng(1)
    train = [list(chain_text(rng, 200).encode()) for _ in range(120)]
    data = make_prepared(root / "chain", train={"chain": train}, val={"chain": train[:4]})
    runs = [train_run(tiny_run_config(root / "runs", data, name=f"s{steps}", train={"steps": steps},
                                      optim={"lr": 1e-2})) for steps in (2, 12, 40)]
    pool = [{"text": chain_text(rng)} for _ in range(40)] + [{"text": noise_text(rng)} for _ in range(40)]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "target.txt").write_text("\n\n".join(chain_text(rng) for _ in range(8)))
    return {"root": root, "runs": runs, "pool": root / "pool.jsonl", "target": root / "target.txt"}  # type: ignore[dict-item]


def test_score_train_select_keep_the_planted_chain_text(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root, runs = world["root"], [str(r) for r in world["runs"]]
    out = root / "scores"
    assert main(["preselect", "score", "--runs", *runs, "--target", str(world["target"]), "--doc-split",
                 "blank_lines", "--docs", str(world["pool"]), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["s2", "s12", "s40"]
    bench = [r["benchmark"] for r in summary["runs"]]
    assert bench[0] > bench[1] > bench[2] and summary["higher_is_better"] is False  # longer training: lower bpb
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    strength = np.array([r["strength"] for r in rows])
    assert len(rows) == 80 and summary["pairs"] == 3
    # every chain document has all pairs in order; on noise the 40-step run is no better than the 12-step one
    # (learning the alphabet, which the 2-step run has not, helps on both)
    assert strength[:40].min() == 1.0 and strength[40:].max() < 1.0

    assert main(["preselect", "train", str(out), "--max-per-class", "30"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    kept_dir = root / "kept"
    assert main(["preselect", "select", "--classifier", str(out / "classifier.npz"), "--docs", str(world["pool"]),
                 "--keep-fraction", "0.25", "--out", str(kept_dir)]) == 0
    kept = [json.loads(line) for line in (kept_dir / "kept.jsonl").read_text().splitlines()]
    chain_texts = {r["text"] for r in rows[:40]}
    assert len(kept) == 20 and all(k["text"] in chain_texts for k in kept)
    sel = json.loads((kept_dir / "summary.json").read_text())
    assert sel["kept_documents"] == 20 and sel["kept_bytes"] >= 0.25 * sel["bytes"]

    # the same runs ranked by given figures (higher is better), or by a task (the `text` task's bits per byte
    # on the target file): the same strengths
    for name, ranking in (("given", ["--scores", "s2=0.1", "s12=0.2", "s40=0.3"]),
                          ("task", ["--task", f"text={world['target']}"])):
        assert main(["preselect", "score", "--runs", *runs, *ranking, "--docs", str(world["pool"]), "--out",
                     str(root / name)]) == 0
        again = [json.loads(x)["strength"] for x in (root / name / "scores.jsonl").read_text().splitlines()]
        assert again == strength.tolist()
    assert json.loads((root / "task" / "summary.json").read_text())["benchmark_source"] == "task text bpb"


@pytest.mark.parametrize(("argv", "message"), [
    (["score", "--runs", "A", "B", "--scores", "A0.3", "--docs", "POOL", "--out", "O"], "is not NAME=VALUE"),
    (["score", "--runs", "RUNS", "--scores", "s2=1", "s12=2", "--docs", "POOL", "--out", "O"], "no figure for run"),
    (["score", "--runs", "RUNS", "--scores", "s2=1", "s12=2", "s40=3", "x=4", "--docs", "POOL", "--out", "O"],
     "'x', which is not one of the runs"),
    (["score", "--runs", "RUNS", "--scores", "s2=1", "s12=1", "s40=1", "--docs", "POOL", "--out", "O"],
     "no two different benchmark figures"),
    (["score", "--runs", "RUNS", "--target", "POOL", "--docs", "MISSING.jsonl", "--out", "O"], "does not exist"),
    (["train", "POOL_DIR"], "not a `preselect score` folder"),
    (["select", "--classifier", "POOL", "--docs", "POOL", "--keep-fraction", "0.1", "--out", "O"],
     "not a readable .npz"),
])
def test_bad_input_is_one_clear_error(world: dict, argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    subst = {"POOL": str(world["pool"]), "POOL_DIR": str(world["root"]), "O": str(world["root"] / "bad"),
             "MISSING.jsonl": str(world["root"] / "missing.jsonl")}
    words: list[str] = []
    for w in argv:
        words += [str(r) for r in world["runs"]] if w == "RUNS" else [subst.get(w, w)]
    assert main(["preselect", *words]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
