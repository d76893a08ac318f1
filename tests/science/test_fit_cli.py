"""`pretrainlab fit` on hand-written sweep results: outputs, tables, column choices and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pretrainlab.cli import main
from pretrainlab.science.sweep import write_results_csv

COLUMNS = ["name", "status", "seed", "optim.weight_decay", "params", "params_non_embedding", "avg_params", "tokens",
           "step", "wall_s", "loss", "val_loss", "val_bpb", "run_dir"]


def _row(name: str, wd: float, n: float, tokens: float, loss: float, status: str = "done", seed: int = 0) -> dict:
    return {"name": name, "status": status, "seed": seed, "optim.weight_decay": wd, "params": n + 5000,
            "params_non_embedding": n, "avg_params": n * 0.8, "tokens": tokens, "step": 100, "wall_s": 1.0,
            "loss": loss, "val_loss": loss, "val_bpb": loss / 0.69, "run_dir": f"runs/{name}"}


def _write(folder: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return folder


def _token_sweep(folder: Path) -> Path:
    """Two weight decays, six token budgets, two seeds; wd=1.0 needs 4x fewer tokens (A halved, alpha 0.5)."""
    rng = np.random.default_rng(0)
    rows = []
    for wd, coef in ((0.1, 100.0), (1.0, 50.0)):
        for t in np.geomspace(1e4, 1e7, 6):
            for seed in (0, 1):
                loss = (2.0 + coef * t**-0.5) * float(np.exp(rng.normal(0, 0.002)))
                rows.append(_row(f"wd{wd}-t{t:.0f}-s{seed}", wd, 1e6, t, loss, seed=seed))
    rows.append(_row("wd0.1-diverged", 0.1, 1e6, 1e4, float("nan"), status="failed"))
    return _write(folder, rows)


def test_fit_writes_json_and_png_and_prints_the_tables(tmp_path, capsys):
    sweep = _token_sweep(tmp_path / "sweep")
    code = main(["fit", str(sweep), "--x", "tokens", "--by", "optim.weight_decay", "--extrapolate", "1e6",
                 "--bootstrap", "40"])
    assert code == 0
    out = capsys.readouterr().out
    assert "power fit of val_loss over tokens" in out
    assert "data efficiency" in out and "L(1e+06)" in out
    js, png = sweep / "fits" / "fit-power-tokens.json", sweep / "fits" / "fit-power-tokens.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in js.parent.iterdir()) == [js.name, png.name]  # no temporary files left
    record = json.loads(js.read_text())
    assert record["law"] == "power" and record["x"] == "tokens" and record["y"] == "val_loss"
    assert record["by"] == "optim.weight_decay" and list(record["fits"]) == ["0.1", "1.0"]
    assert record["points"]["0.1"]["x"][:2] == [1e4, 1e4] and len(record["points"]["0.1"]["y"]) == 12
    assert "wd0.1-diverged" not in record["points"]["0.1"]["names"]  # failed rows are left out
    fit = record["fits"]["0.1"]
    assert fit["params"]["E"] == pytest.approx(2.0, rel=0.02) and fit["n_bootstrap"] == 40
    assert fit["params"]["alpha"] == pytest.approx(0.5, rel=0.05)
    ex = record["extrapolations"]["1.0"][0]
    assert ex["x"] == 1e6 and ex["lo"] <= ex["y"] <= ex["hi"]
    eff = {(r["a"], r["b"]): r for r in record["data_efficiency"]}
    assert eff[("0.1", "1.0")]["k"] == pytest.approx(4.0, rel=0.15)
    assert eff[("0.1", "1.0")]["lo"] <= 4.0 <= eff[("0.1", "1.0")]["hi"]
    assert eff[("1.0", "0.1")]["k"] == pytest.approx(0.25, rel=0.15)
    assert eff[("0.1", "1.0")]["d"] == 1e6


def test_too_few_done_rows_exit_2_with_a_clear_message(tmp_path, capsys):
    rows = [_row("a", 0.1, 1e5, 1e7, 3.0), _row("b", 0.1, 1e6, 1e7, 2.8),
            _row("c", 0.1, 1e7, 1e7, float("nan"), status="failed"), _row("d", 0.1, 1e8, 1e7, 0, status="pending")]
    csv_path = _write(tmp_path / "sweep", rows) / "results.csv"
    assert main(["fit", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert "2 finished points but the power law has 3 parameters" in err
    assert "1 failed, 1 pending" in err and "what to do" in err
    assert not (tmp_path / "sweep" / "fits").exists()


def test_params_means_non_embedding_and_falls_back_with_a_note(tmp_path, capsys):
    rows = [_row(f"n{i}", 0.1, n, 1e8, 2.0 + 30 * n**-0.3) for i, n in enumerate(np.geomspace(1e4, 1e7, 6))]
    sweep = _write(tmp_path / "sweep", rows)
    assert main(["fit", str(sweep), "--bootstrap", "0", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "fit-power-params.json").read_text())
    assert record["x_column"] == "params_non_embedding"
    assert record["fits"]["all"]["x_range"] == pytest.approx([1e4, 1e7])
    assert record["fits"]["all"]["params"]["alpha"] == pytest.approx(0.3, rel=1e-3)
    assert main(["fit", str(sweep), "--x", "avg_params", "--bootstrap", "0", "--out", str(tmp_path / "out")]) == 0
    avg = json.loads((tmp_path / "out" / "fit-power-avg_params.json").read_text())
    assert avg["fits"]["all"]["x_range"] == pytest.approx([0.8e4, 0.8e7])
    # Runs that did not record the non-embedding count: the total count, and a note saying so.
    no_ne = _write(tmp_path / "old", rows, [c for c in COLUMNS if c != "params_non_embedding"])
    capsys.readouterr()
    assert main(["fit", str(no_ne), "--bootstrap", "0"]) == 0
    assert "note: no run recorded params_non_embedding" in capsys.readouterr().out
    old = json.loads((no_ne / "fits" / "fit-power-params.json").read_text())
    assert old["x_column"] == "params" and old["fits"]["all"]["x_range"] == pytest.approx([1e4 + 5000, 1e7 + 5000])


def test_chinchilla_from_two_sweeps(tmp_path, capsys):
    rows_a, rows_b = [], []
    for n in np.geomspace(1e5, 1e7, 4):
        for t in np.geomspace(1e7, 1e9, 4):
            loss = 1.7 + 400 * n**-0.34 + 410 * t**-0.28
            (rows_a if t < 1e8 else rows_b).append(_row(f"n{n:.0f}-t{t:.0f}", 0.1, n, t, loss))
    a, b = _write(tmp_path / "a", rows_a), _write(tmp_path / "b", rows_b)
    code = main(["fit", str(a), str(b), "--law", "chinchilla", "--bootstrap", "10", "--extrapolate", "1e9",
                 "--extrapolate-tokens", "2e10"])
    assert code == 0
    assert "chinchilla fit of val_loss over params_non_embedding" in capsys.readouterr().out
    record = json.loads((a / "fits" / "fit-chinchilla-params.json").read_text())
    fit = record["fits"]["all"]
    assert fit["n_points"] == 16 and fit["params"]["beta"] == pytest.approx(0.28, rel=0.02)
    assert record["points"]["all"]["d"][0] == pytest.approx(1e7)
    assert record["extrapolations"]["all"][0]["d"] == 2e10
    assert set(record["sources"]) == {str(a / "results.csv"), str(b / "results.csv")}
    assert record["data_efficiency"] == []
    # each row knows its sweep, so two sweeps can be compared with --by sweep
    assert main(["fit", str(a), str(b), "--by", "sweep", "--bootstrap", "0", "--out", str(tmp_path / "by")]) == 0
    by_sweep = json.loads((tmp_path / "by" / "fit-power-params.json").read_text())
    assert list(by_sweep["fits"]) == ["a", "b"] and by_sweep["fits"]["a"]["n_points"] == 8


def test_bad_columns_and_paths_exit_2(tmp_path, capsys):
    sweep = _token_sweep(tmp_path / "sweep")
    assert main(["fit", str(sweep), "--by", "optim.lr"]) == 2
    err = capsys.readouterr().err
    assert "no column 'optim.lr'" in err and "optim.weight_decay" in err
    assert main(["fit", str(sweep), "--y", "val_loss/web"]) == 2
    assert "no column 'val_loss/web'" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["fit", str(tmp_path / "empty")]) == 2
    assert "has no results.csv" in capsys.readouterr().err
    assert main(["fit", str(sweep), "--law", "chinchilla", "--x", "tokens"]) == 2
    assert "--x names its parameter axis" in capsys.readouterr().err


def test_a_done_row_with_a_bad_loss_is_named(tmp_path, capsys):
    rows = [_row(f"n{i}", 0.1, n, 1e8, 2.0 + 30 * n**-0.3) for i, n in enumerate(np.geomspace(1e4, 1e7, 5))]
    rows[2]["val_loss"] = ""
    sweep = _write(tmp_path / "sweep", rows)
    assert main(["fit", str(sweep), "--bootstrap", "0", "--by", "optim.weight_decay"]) == 2
    err = capsys.readouterr().err
    assert "optim.weight_decay=0.1: non-finite loss nan at point 2 (n2)" in err


def _real_sweep(folder: Path) -> Path:
    """A sweep folder as `pretrainlab sweep` leaves it (points.json, configs/, runs/ with end lines), no csv:
    two recipes (tie_embeddings false/true), six data sizes each; the tied recipe needs 4x less data."""
    points = []
    (folder / "configs").mkdir(parents=True)
    for tie, coef in ((False, 100.0), (True, 50.0)):
        for size in np.geomspace(1e4, 1e7, 6).astype(int):
            name = f"tie-{str(tie).lower()}_d-{size}_s0"
            points.append({"name": name, "seed": 0, "overrides": {}, "axes": {"model.tie_embeddings": tie,
                                                                             "optim.weight_decay": 0.1}})
            data = folder.parent / "data" / f"d{size}"
            data.mkdir(parents=True, exist_ok=True)
            (data / "manifest.json").write_text(json.dumps({"domains": {"web": {"train": {"tokens": int(size)}}}}))
            (folder / "configs" / f"{name}.yaml").write_text(yaml.safe_dump({"data": {"path": str(data), "seq_len": 32}}))
            run = folder / "runs" / name
            run.mkdir(parents=True)
            end = {"event": "end", "step": 100, "tokens": 1e8, "params": 15000, "params_non_embedding": 10000,
                   "val_loss": 2.0 + coef * float(size) ** -0.5, "wall_s": 1.0}
            (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "lr": 1e-3, "loss": 9.0}) + "\n" + json.dumps(end) + "\n")
    (folder / "points.json").write_text(json.dumps(points))
    return folder


def test_a_sweep_folder_is_read_from_its_run_folders_and_data_tokens_is_an_x(tmp_path, capsys):
    """A real sweep folder is read through load_results (the run folders), not a stale results.csv beside it;
    --x data_tokens fits the loss against the data's size and compares the recipes by data efficiency."""
    sweep = _real_sweep(tmp_path / "sweep")
    (sweep / "results.csv").write_text("name,status\n")  # stale copy: no rows
    code = main(["fit", str(sweep), "--x", "data_tokens", "--by", "model.tie_embeddings", "--bootstrap", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "power fit of val_loss over data_tokens" in out and "data efficiency" in out
    record = json.loads((sweep / "fits" / "fit-power-data_tokens.json").read_text())
    assert record["sources"] == [str(sweep)] and record["x_column"] == "data_tokens"
    assert list(record["fits"]) == ["false", "true"] and record["fits"]["true"]["n_points"] == 6
    assert record["fits"]["true"]["x_range"] == pytest.approx([1e4, 1e7])
    eff = {(r["a"], r["b"]): r for r in record["data_efficiency"]}
    assert eff[("false", "true")]["k"] == pytest.approx(4.0, rel=0.02)


def test_data_tokens_of_runs_whose_data_is_gone_is_a_clear_error(tmp_path, capsys):
    sweep = _real_sweep(tmp_path / "sweep")
    for manifest in (tmp_path / "data").glob("*/manifest.json"):
        manifest.unlink()
    assert main(["fit", str(sweep), "--x", "data_tokens", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "data_tokens is unknown for 12 finished run(s) (tie-false_d-10000_s0" in err and "data.path" in err


def test_groups_are_named_the_same_from_the_run_folders_and_from_results_csv(tmp_path):
    sweep = _real_sweep(tmp_path / "sweep")
    csv_path = write_results_csv(sweep)
    labels = []
    for source, out in ((sweep, "a"), (csv_path, "b")):
        assert main(["fit", str(source), "--by", "model.tie_embeddings", "--x", "data_tokens", "--bootstrap", "0",
                     "--out", str(tmp_path / out)]) == 0
        labels.append(list(json.loads((tmp_path / out / "fit-power-data_tokens.json").read_text())["fits"]))
    assert labels == [["false", "true"], ["false", "true"]]


def test_a_law_the_points_do_not_pin_down_gets_a_note(tmp_path, capsys):
    """Three sizes, one decade, 3% noise: the asymptote's interval reaches E ~ 0 and a warning follows the table."""
    rng = np.random.default_rng(0)
    rows = [_row(f"n{i}", 0.1, n, 1e8, (2.0 + 40 * n**-0.3) * float(np.exp(rng.normal(0, 0.03))))
            for i, n in enumerate(np.repeat(np.geomspace(1e4, 1e5, 3), 2))]
    sweep = _write(tmp_path / "sweep", rows)
    assert main(["fit", str(sweep), "--bootstrap", "30"]) == 0
    out = capsys.readouterr().out
    assert "note: the fit: the 95% intervals of" in out and "do not pin this law down" in out
    assert "note: the fit: only 3 distinct values of params for 3 parameters" in out
    record = json.loads((sweep / "fits" / "fit-power-params.json").read_text())
    assert any("do not pin this law down" in n for n in record["notes"])
