"""Ensemble evaluation: prefix ensembles in one pass per member, both combine rules, the CLI and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_prepared, markov_docs, random_docs, tiny_run_config, train_run
from pretrainlab.cli import main
from pretrainlab.errors import ConfigError, DataError
from pretrainlab.eval.evaluate import evaluate
from pretrainlab.eval.load import load_run
from pretrainlab.model.ensemble import EnsembleDecoder
from pretrainlab.science.ensemble import evaluate_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Four members (seeds 0..3) on one prepared folder, one on another tokenizer, one at a shorter seq_len."""
    tmp = tmp_path_factory.mktemp("ensemble")
    rng = np.random.default_rng(0)
    data = make_prepared(
        tmp / "prepared",
        train={"alpha": markov_docs(rng, 120), "beta": markov_docs(rng, 60, 300)},
        val={"alpha": markov_docs(rng, 8), "beta": markov_docs(rng, 4, 300)},
    )
    out: dict[str, Path] = {"data": data}
    for seed in range(4):
        out[f"m{seed}"] = train_run(tiny_run_config(tmp / "runs", data, name=f"m{seed}", seed=seed,
                                                 train={"steps": 12}, optim={"lr": 1e-2}))
    other = make_prepared(tmp / "other", train={"alpha": random_docs(rng, 40)}, val={"alpha": random_docs(rng, 4)},
                          vocab_size=300)
    out["other_tokenizer"] = train_run(tiny_run_config(tmp / "runs", other, name="other", train={"steps": 2}))
    out["short"] = train_run(tiny_run_config(tmp / "runs", data, name="short", data={"seq_len": 16},
                                          train={"steps": 2, "global_batch_tokens": 16 * 8}))
    return out


_LOADED: dict[Path, tuple] = {}


def _load(run: Path) -> tuple:
    if run not in _LOADED:
        _LOADED[run] = load_run(run)
    return _LOADED[run]


def _evaluate_decoder(members: list[Path], combine: str) -> dict[str, float]:
    """The reference: `eval.evaluate` of an EnsembleDecoder over the members."""
    _, cfg, data, _ = _load(members[0])
    return evaluate(EnsembleDecoder([_load(m)[0] for m in members], combine), data, seq_len=cfg.data.seq_len,
                    max_tokens_per_domain=cfg.eval.max_tokens_per_domain, batch_size=8, device=CPU,
                    autocast_dtype=None)


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_identical_members_score_exactly_the_member(runs, combine):
    a = runs["m0"]
    result = evaluate_ensemble([a, a], combine=combine)
    alone = _evaluate_decoder([a], "logits")
    assert result["member_val_loss"] == pytest.approx([alone["val_loss"]] * 2, rel=1e-9)
    assert result["val_loss"][1] == pytest.approx(alone["val_loss"], rel=1e-7, abs=0)
    assert result["val_bpb"][1] == pytest.approx(alone["val_bpb"], rel=1e-7, abs=0)
    for d in ("alpha", "beta"):
        assert result[f"val_loss/{d}"][1] == pytest.approx(alone[f"val_loss/{d}"], rel=1e-7, abs=0)
    assert result["val_tokens"] == alone["val_tokens"]


def test_logit_and_probability_averaging_differ(runs):
    members = [runs["m0"], runs["m1"]]
    by_logits = evaluate_ensemble(members, combine="logits")
    by_probs = evaluate_ensemble(members, combine="probs")
    assert by_logits["val_loss"][0] == pytest.approx(by_probs["val_loss"][0], rel=1e-6)  # k = 1: the member
    assert abs(by_logits["val_loss"][1] - by_probs["val_loss"][1]) > 1e-4
    # Both rules gain over the members: -log of a mixture is at most the mean member loss (convexity).
    assert by_probs["val_loss"][1] <= np.mean(by_probs["member_val_loss"])


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_prefix_figures_equal_evaluating_each_prefix_ensemble(runs, combine):
    members = [runs[f"m{s}"] for s in range(4)] if combine == "logits" else [runs["m2"], runs["m0"], runs["m3"]]
    result = evaluate_ensemble(members, combine=combine, batch_size=5, fit=False)  # uneven batches
    assert result["k"] == list(range(1, len(members) + 1))
    for k in result["k"]:
        ref = _evaluate_decoder(members[:k], combine)
        assert result["val_loss"][k - 1] == pytest.approx(ref["val_loss"], rel=1e-6)
        assert result["val_bpb"][k - 1] == pytest.approx(ref["val_bpb"], rel=1e-6)
        assert result["val_loss/beta"][k - 1] == pytest.approx(ref["val_loss/beta"], rel=1e-6)
        alone = _evaluate_decoder([members[k - 1]], combine)["val_loss"]
        assert result["member_val_loss"][k - 1] == pytest.approx(alone, rel=1e-6)


def test_cli_writes_ensemble_json_and_plot_and_folder_is_a_spec(runs, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["ensemble", str(runs["m0"]), str(runs["m1"]), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "gain over member mean" in printed and "needs at least 4" in printed
    record = json.loads((out / "ensemble.json").read_text())
    assert record["members"] == [str(runs["m0"].resolve()), str(runs["m1"].resolve())]
    assert record["combine"] == "logits" and record["k"] == [1, 2] and record["fit"] is None
    assert len(record["val_loss"]) == 2 and len(record["val_loss/alpha"]) == 2
    assert (out / "ensemble.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "ensemble.png"]  # no temporary left
    again = evaluate_ensemble([out])  # the folder names its members, like a teacher spec
    assert again["val_loss"] == pytest.approx(record["val_loss"], rel=1e-12)


def test_cli_fits_the_asymptote_with_four_members(runs, tmp_path, capsys):
    pytest.importorskip("pretrainlab.science.fit")
    out = tmp_path / "ens4"
    members = [str(runs[f"m{s}"]) for s in range(4)]
    assert main(["ensemble", *members, "--out", str(out), "--device", "cpu", "--bootstrap", "20"]) == 0
    assert "asymptote E_K" in capsys.readouterr().out
    record = json.loads((out / "ensemble.json").read_text())
    fit = record["fit"]
    assert fit is not None and record["fit_note"] is None
    assert set(fit["params"]) >= {"E", "A", "alpha"} and np.isfinite(fit["params"]["E"])
    assert len(fit["curve"]["x"]) == len(fit["curve"]["y"]) > 0
    assert (out / "ensemble.png").stat().st_size > 1000


def test_missing_member_is_a_config_error(runs, tmp_path, capsys):
    assert main(["ensemble", str(runs["m0"]), str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_members_with_different_tokenizers_are_refused(runs):
    with pytest.raises(DataError, match="different tokenizer"):
        evaluate_ensemble([runs["m0"], runs["other_tokenizer"]])


def test_member_shorter_than_the_eval_seq_len_is_refused(runs):
    with pytest.raises(ConfigError, match="at most 16 tokens.*seq_len 32"):
        evaluate_ensemble([runs["m0"], runs["short"]])
    result = evaluate_ensemble([runs["m0"], runs["short"]], seq_len=16)  # a shorter window fits both
    assert len(result["val_loss"]) == 2 and result["seq_len"] == 16


def test_bad_arguments_name_themselves(runs, tmp_path):
    with pytest.raises(ConfigError, match="combine='mean'"):
        evaluate_ensemble([runs["m0"]], combine="mean")
    with pytest.raises(ConfigError, match="batch_size=0"):
        evaluate_ensemble([runs["m0"]], batch_size=0)
    with pytest.raises(ConfigError, match="max_tokens_per_domain=0"):
        evaluate_ensemble([runs["m0"]], max_tokens_per_domain=0)
    with pytest.raises(ConfigError, match="bootstrap=-1"):
        evaluate_ensemble([runs["m0"]], bootstrap=-1)
    from pretrainlab.science.ensemble import write_ensemble

    with pytest.raises(ConfigError, match="is a run folder"):
        write_ensemble(evaluate_ensemble([runs["m0"]]), runs["m1"])
