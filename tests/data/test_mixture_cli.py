"""`pretrainlab train` with a two-stage curriculum and a cap, end to end: log lines, end line, report plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pretrainlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, TPB = 8, 32 * 8  # tiny_run_config-like: seq_len 32, 8 rows per step


def config(tmp_path: Path, data: Path, stages: list[dict], **data_extra) -> Path:
    tree = {
        "name": "curriculum", "out_dir": str(tmp_path / "runs"),
        "data": {"path": str(data), "seq_len": 32, "stages": stages, **data_extra},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
        "objective_options": {"per_domain": True},  # loss/<d> on each line: which domains the step's rows came from
        "schedule": {"warmup_steps": 1},
        "train": {"steps": STEPS, "global_batch_tokens": TPB, "micro_batch_size": 8, "precision": "fp32",
                  "progress": False, "log_every": 1, "threads": 1},
        "eval": {"max_tokens_per_domain": 256, "batch_size": 8},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_two_stage_curriculum_switches_at_the_configured_token(tiny_prepared: Path, tmp_path: Path) -> None:
    # Stage 0 ends at token 3 x 256 + 1: batch 3 still starts below it, batch 4 (step 5) is the first of stage 1.
    path = config(tmp_path, tiny_prepared, [{"weights": {"alpha": 1}, "until_tokens": 3 * TPB + 1},
                                            {"weights": {"alpha": 1, "beta": 3}}], max_epochs={"beta": 50})
    assert main(["train", str(path)]) == 0
    run = tmp_path / "runs" / "curriculum"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r and "event" not in r and "val_loss" not in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    for r in train:
        stage1 = r["step"] >= 5
        assert r["domain_weights"] == ({"alpha": 0.25, "beta": 0.75} if stage1 else {"alpha": 1.0, "beta": 0.0})
        if not stage1:  # the step's rows are all alpha's: no beta loss on its line
            assert "loss/alpha" in r and "loss/beta" not in r
        assert sum(r["domain_share"].values()) == pytest.approx(1.0)
    assert train[3]["domain_share"] == {"alpha": 1.0, "beta": 0.0}
    end = next(r for r in lines if r.get("event") == "end")
    assert set(end["domain_share"]) == {"alpha", "beta"} and end["domain_share"]["beta"] > 0
    assert end["domain_epochs"]["alpha"] > 0

    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "data mixture vs tokens" in report
    assert (tmp_path / "report" / "plots" / "mixture.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_domain_in_a_stage_is_one_clear_error(tiny_prepared: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, tiny_prepared, [{"weights": {"alpha": 1}, "until_fraction": 0.5},
                                            {"weights": {"gamma": 1}}])
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.stages.1.weights names unknown domain 'gamma'; the data has: alpha, beta" in err
    assert not (tmp_path / "runs" / "curriculum" / "metrics.jsonl").exists()  # refused before training


def test_trainer_resume_mid_stage_and_mid_cap_continues_the_same_curriculum(tiny_prepared: Path,
                                                                           tmp_path: Path) -> None:
    """Stopped (with a checkpoint) at step 3 inside stage 0, after 'alpha' hit its cap, then resumed."""
    from pretrainlab.config import load_config, RunConfig
    from pretrainlab.train.callbacks import Callback
    from pretrainlab.train.trainer import Trainer

    class StopAt(Callback):
        def on_step_end(self, trainer: Trainer, metrics: dict) -> None:
            if trainer.step == 3:
                trainer.request_stop("test")

    stages = [{"weights": {"alpha": 1, "beta": 1}, "until_tokens": 5 * TPB}, {"weights": {"alpha": 1, "beta": 3}}]
    cfg = load_config(RunConfig, config(tmp_path, tiny_prepared, stages, max_epochs={"alpha": 0.005}))

    def lines(run: Path) -> list[tuple]:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["domain_weights"], r["domain_share"]) for r in rows if "domain_weights" in r
                and "event" not in r]

    straight = cfg.model_copy(update={"name": "straight"})
    Trainer(straight).fit()
    stopped = Trainer(cfg)
    stopped.callbacks.append(StopAt())
    stopped.fit()
    assert stopped.loader.mixture_metrics()["domain_weights"]["alpha"] == 0.0  # capped before step 3
    Trainer(cfg, resume=True).fit()
    runs = tmp_path / "runs"
    assert lines(runs / "curriculum") == lines(runs / "straight")
    assert len(lines(runs / "straight")) == STEPS
