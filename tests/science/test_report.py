"""`pretrainlab report`: run, sweep and replication folders into report.md + a self-contained report.html."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import make_prepared, random_docs, tiny_run_config
from pretrainlab.cli import main
from pretrainlab.errors import DataError
from pretrainlab.science import report as report_mod
from pretrainlab.science import report_sweep
from pretrainlab.science import sweep as sweep_mod
from pretrainlab.science.fit_entry import fit_sweeps
from pretrainlab.science.plots import Curve, is_png, line_plot
from pretrainlab.science.report import write_report
from pretrainlab.science.report_doc import PlotTarget, fmt


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real tiny runs (weight decay 0.1 and 1.0), trained once for the whole module."""
    from pretrainlab.train.trainer import Trainer

    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    data = make_prepared(
        root / "prepared",
        train={"alpha": random_docs(rng, 60), "beta": random_docs(rng, 40, 50, 300)},
        val={"alpha": random_docs(rng, 10), "beta": random_docs(rng, 6, 50, 300)},
    )
    out = {}
    for name, wd in (("wd0.1", 0.1), ("wd1.0", 1.0)):
        cfg = tiny_run_config(root / "runs", data, name=name, optim={"lr": 3e-3, "weight_decay": wd},
                              train={"steps": 4}, eval={"every": 2, "max_tokens_per_domain": 128, "batch_size": 4})
        Trainer(cfg).fit()
        out[name] = root / "runs" / name
    return out


def _end(run: Path) -> dict:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"event": "end"' in x][-1]


def _check_html(path: Path, min_images: int) -> str:
    text = path.read_text(encoding="utf-8")
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) >= min_images
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in text and "<link" not in text and "href=" not in text and "url(" not in text
    return text


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    return dst


def test_run_report_real_run(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy_run(runs["wd0.1"], tmp_path / "run")
    written = write_report(run)
    md = written["md"].read_text(encoding="utf-8")
    end = _end(run)
    assert f"{end['val_loss']:.4f}" in md and f"{end['val_bpb']:.4f}" in md
    assert f"{end['params']:,}" in md and "complete" in md
    assert "| alpha |" in md and "| beta |" in md  # per-domain validation table
    for name in ("loss", "val-loss-domains", "lr", "tokens-per-s"):
        png = run / "plots" / f"{name}.png"
        assert is_png(png) and f"](plots/{name}.png)" in md
    import matplotlib.image

    assert matplotlib.image.imread(run / "plots" / "loss.png").ndim == 3  # decodes as an image
    _check_html(written["html"], min_images=4)
    assert not list(run.glob(".report-tmp-*"))


def _write_metrics(run: Path, lines: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_unfinished_run_with_recipe_metrics_and_nan(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "going"
    run.mkdir()
    shutil.copy(runs["wd0.1"] / "config.yaml", run / "config.yaml")
    lines = [{"step": s, "tokens": 256 * s, "loss": 5.0 - 0.1 * s if s != 3 else None, "lr": 1e-3, "tokens_per_s": 1e4,
              "live_params": 1000 - 100 * s, "domain_weights": {"alpha": 0.2 * s, "beta": 1 - 0.2 * s},
              "kl": 0.5 / s, "skipped_steps": 0} for s in range(1, 5)]
    lines.append({"step": 2, "tokens": 512, "val_loss": 4.9, "val_bpb": 7.1})
    _write_metrics(run, lines)
    md = write_report(run)["md"].read_text(encoding="utf-8")
    assert "incomplete: no end line; last logged step 4 of 4" in md
    assert "4.9000" in md  # the newest logged validation loss
    for name in ("metric-live_params", "metric-domain_weights", "metric-kl"):
        assert is_png(run / "plots" / f"{name}.png"), name
    assert "| skipped_steps | train | 0 |" in md  # constant: a table row, not a plot


def test_run_without_metrics_or_validation(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    _write_metrics(empty, [])
    md = write_report(empty)["md"].read_text(encoding="utf-8")
    assert "no metrics logged yet" in md and "config.yaml is missing" in md and "nothing to plot" in md
    noval = tmp_path / "noval"
    _write_metrics(noval, [{"step": 1, "tokens": 8, "loss": float("nan"), "lr": 0.1},
                           {"event": "end", "step": 1, "tokens": 8, "loss": None, "wall_s": 1.0}])
    md = write_report(noval)["md"].read_text(encoding="utf-8")
    assert "no validation lines were logged" in md and "| final train loss | NaN |" in md


@pytest.fixture(scope="module")
def fit_record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fit file written by `pretrainlab fit` itself (fit_sweeps) over tokens, one law per weight decay,
    with extrapolations, data efficiency between the groups and a note (3 token budgets for 3 parameters)."""
    root = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    columns = ["name", "status", "seed", "optim.weight_decay", "tokens", "val_loss"]
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for wd, coef in ((0.1, 100.0), (1.0, 50.0)):
            for t in (1e4, 1e5, 1e6):
                for seed in (0, 1):
                    loss = (2.0 + coef * t**-0.5) * float(np.exp(rng.normal(0, 0.003)))
                    w.writerow({"name": f"wd{wd}-t{t:.0f}-s{seed}", "status": "done", "seed": seed,
                                "optim.weight_decay": wd, "tokens": t, "val_loss": loss})
    return fit_sweeps([root / "results.csv"], x="tokens", by="optim.weight_decay", extrapolate_at=[1e7],
                      bootstrap=20, out=root / "fits")


def _sweep(runs: dict[str, Path], folder: Path, fit: dict | None = None) -> Path:
    """A sweep folder built by hand: two finished points (weight decay axis) and one failed point, and the
    fit `fit` (written by `pretrainlab fit`) in its fits/."""
    points, rows = [], []
    for name, wd in (("wd0.1", 0.1), ("wd1.0", 1.0)):
        run = _copy_run(runs[name], folder / "runs" / name)
        end = _end(run)
        points.append({"name": name, "overrides": {"optim.weight_decay": wd, "seed": 0}, "seed": 0,
                       "axes": {"optim.weight_decay": wd}})
        rows.append({"name": name, "status": "done", "seed": 0, "optim.weight_decay": wd, "params": end["params"],
                     "params_non_embedding": end["params_non_embedding"], "avg_params": end["params_non_embedding"],
                     "tokens": end["tokens"], "step": end["step"], "wall_s": end["wall_s"], "loss": end["loss"],
                     "val_loss": end["val_loss"], "val_bpb": end["val_bpb"], "run_dir": str(run)})
    points.append({"name": "wd10.0", "overrides": {"optim.weight_decay": 10.0, "seed": 0}, "seed": 0,
                   "axes": {"optim.weight_decay": 10.0}})
    rows.append({"name": "wd10.0", "status": "failed", "seed": 0, "optim.weight_decay": 10.0})
    (folder / "logs").mkdir()
    (folder / "logs" / "wd10.0.log").write_text("step 1/4\nerror: loss is NaN at step 2\n")
    (folder / "points.json").write_text(json.dumps(points))
    (folder / "status.json").write_text(json.dumps({"pid": 99999999, "points": {"wd10.0": {"status": "failed"}}}))
    columns = list(rows[0])
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    if fit is not None:
        (folder / "fits").mkdir()
        for key in ("json", "png"):
            shutil.copy(fit[key], folder / "fits" / Path(fit[key]).name)
    return folder


def test_sweep_report_from_results_csv(
    runs: dict[str, Path], fit_record: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(path: Path) -> list:
        raise DataError(f"{path}: run folders unreadable")

    monkeypatch.setattr(sweep_mod, "load_results", unreadable)  # the run folders fail: csv fallback
    sweep = _sweep(runs, tmp_path / "sweep", fit_record)
    best = min(("wd0.1", "wd1.0"), key=lambda n: _end(runs[n])["val_loss"])
    written = write_report(sweep)
    md = written["md"].read_text(encoding="utf-8")
    assert "run folders unreadable); results.csv is shown instead" in md
    assert re.search(rf"^\| \*\*★\*\* \| \*\*{re.escape(best)}\*\* \|", md, re.M)  # best row first, starred
    assert "point wd10.0 failed; last log line: error: loss is NaN at step 2" in md
    assert "](fits/fit-power-tokens.png)" in md
    for name in ("val-curves", "axis-optim.weight_decay"):
        assert is_png(sweep / "plots" / f"{name}.png")
    html = _check_html(written["html"], min_images=3)
    assert html.count('class="marked"') == 1


def test_the_fit_section_shows_what_pretrainlab_fit_wrote(runs: dict[str, Path], fit_record: dict, tmp_path: Path) -> None:
    """Parameters with intervals, the extrapolations ({group: [{x, d, y, lo, hi}]}), the data efficiency
    between the groups, the x column and the fit's notes."""
    sweep = _sweep(runs, tmp_path / "sweep", fit_record)
    md = write_report(sweep)["md"].read_text(encoding="utf-8")
    assert "law power: L(x) = E + A / x^alpha; y = val_loss, x = tokens, one fit per value of optim.weight_decay" in md
    for group, fit in fit_record["fits"].items():
        e, (lo, hi) = fit["params"]["E"], fit["ci"]["E"]
        assert f"| {group} | {fit['n_points']} | {fmt(e)} [{fmt(lo)}, {fmt(hi)}] |" in md
        (ex,) = fit_record["extrapolations"][group]
        assert f"| {group} | 10,000,000 | {fmt(ex['y'])} [{fmt(ex['lo'])}, {fmt(ex['hi'])}] |" in md
    assert "| A | B | D (tokens) | A's loss at D | k [95% CI] |" in md
    eff = next(r for r in fit_record["data_efficiency"] if (r["a"], r["b"]) == ("0.1", "1.0"))
    assert f"| 0.1 | 1.0 | 10,000,000 | {fmt(eff['loss_a'])} | {fmt(eff['k'])} [{fmt(eff['lo'])}, {fmt(eff['hi'])}] |" in md
    assert fit_record["notes"] and all(f"> **Note:** {note}" in md for note in fit_record["notes"])


def test_undotted_swept_keys_are_axes_and_split_the_axis_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A swept `objective` is a column of the table, and the weight-decay plot draws one line per objective
    instead of averaging the recipes."""
    points, rows = [], []
    for objective, shift in (("next_token", 0.0), ("distill", -0.5)):
        for wd in (0.1, 1.0):
            name = f"objective-{objective}_wd-{wd}_s0"
            points.append({"name": name, "seed": 0, "overrides": {"objective": objective, "optim.weight_decay": wd,
                                                                  "train.steps": 5, "seed": 0},
                           "axes": {"objective": objective, "optim.weight_decay": wd}})
            rows.append({"name": name, "status": "done", "seed": 0, "val_loss": 4.0 + shift + wd})
    axes = report_sweep.axis_columns(points, rows)
    assert axes == ["objective", "optim.weight_decay"]
    assert "objective" in report_sweep.results_table(rows, axes, "val_loss").headers
    drawn = {}
    monkeypatch.setattr(report_sweep, "line_plot", lambda path, curves, **kw: drawn.update({c.label: c.y for c in curves}))
    report_sweep.axis_plot(rows, "optim.weight_decay", axes, "val_loss", PlotTarget(tmp_path))
    assert drawn == {"objective=next_token": [4.1, 5.0], "objective=distill": [3.6, 4.5]}


def test_sweep_report_default_reader_and_out_dir(runs: dict[str, Path], tmp_path: Path) -> None:
    sweep = _sweep(runs, tmp_path / "sweep")
    ens = sweep / "ensemble"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({
        "members": ["a", "b"], "combine": "logits", "data": "prepared", "k": [1, 2], "val_loss": [5.5, 5.25],
        "val_bpb": [8.0, 7.5], "val_loss/alpha": [5.4, 5.2], "member_val_loss": [5.5, 5.6], "fit": None}))
    out = tmp_path / "elsewhere"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "wd0.1" in md and "wd1.0" in md and "| 2 | 5.2500 | 7.5000 | 5.2000 |" in md
    assert "3 points: 2 done, 1 failed" in md and "point wd10.0 failed" in md
    for link in re.findall(r"\]\(([^)]+)\)", md):  # every image link resolves from the report's folder
        assert is_png(out / link), link
    assert not (sweep / "report.md").exists()


def test_replication_report(runs: dict[str, Path], fit_record: dict, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    _sweep(runs, rep / "grid", fit_record)
    (rep / "plots").mkdir()
    line_plot(rep / "plots" / "asymptotes.png", [Curve("x", [1, 2], [3, 2])], title="t", x_label="x", y_label="y")
    (rep / "replication.json").write_text(json.dumps({
        "name": "infinite-compute", "paper": "Pre-training under infinite compute, arXiv:2509.14786", "scale": "tiny",
        "seeds": 2, "wall_s": 3725.0,
        "claims": [{"claim": "tuned weight decay beats 0.1", "paper_figure": "0.30x", "our_figure": "0.10x",
                    "spread": "±0.01", "holds": True},
                   {"claim": "distilled student keeps 83% of the gain", "paper_figure": "83%", "our_figure": "40%",
                    "spread": "±5%", "holds": False},
                   {"claim": "8x smaller student", "paper_figure": "8x", "our_figure": "not measured", "spread": "",
                    "holds": None}]}))
    written = write_report(rep)
    md = written["md"].read_text(encoding="utf-8")
    assert "| tuned weight decay beats 0.1 | 0.30x | 0.10x | ±0.01 | ✓ |" in md
    assert "| distilled student keeps 83% of the gain | 83% | 40% | ±5% | ✗ |" in md
    assert "| n/a |" in md and "1 of 3 claims hold" in md and "1 h 02 min" in md
    assert "](plots/asymptotes.png)" in md and "## Sweep grid" in md and "## Fits grid/fits" not in md
    assert is_png(rep / "plots" / "sweep-grid-val-curves.png")
    _check_html(written["html"], min_images=4)
    second = write_report(rep)["md"].read_text(encoding="utf-8")  # its own earlier plots are not "replication plots"
    assert second == md


def test_failed_write_leaves_no_half_report(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _copy_run(runs["wd0.1"], tmp_path / "run")
    before = write_report(run)["md"].read_text(encoding="utf-8")

    def boom(title: str, blocks: list) -> str:
        raise RuntimeError("disk full")

    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # no end line: a new report would differ
    monkeypatch.setattr(report_mod, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_report(run)
    assert (run / "report.md").read_text(encoding="utf-8") == before
    assert not list(run.glob(".report-tmp-*"))


def test_bad_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run, sweep or replication folder" in err and "metrics.jsonl" in err and "points.json" in err
    assert not (tmp_path / "report.md").exists()


def test_fmt() -> None:
    assert fmt(None) == "—" and fmt(float("nan")) == "NaN" and fmt(12345) == "12,345" and fmt(512.0) == "512"
    assert fmt(5.55243) == "5.5524" and fmt(3e-4) == "3.000e-04" and fmt(True) == "yes"


def test_a_mixture_axis_is_plotted_against_each_domains_weight(tmp_path: Path) -> None:
    import warnings

    rows = [{"name": f"p{i}", "status": "done", "data.weights": w, "val_loss": 2.0 + w["a"]}
            for i, w in enumerate([{"a": 0.2, "b": 0.8}, {"a": 0.5, "b": 0.5}, {"a": 3.0, "b": 1.0}])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "constrained_layout not applied" for long tick labels
        block = report_sweep.axis_plot(rows, "data.weights", ["data.weights"], "val_loss", PlotTarget(tmp_path))
    assert "each domain's weight" in block.caption and is_png(block.file)


def test_long_categorical_ticks_are_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from matplotlib.axes import Axes

    seen: list[list[str]] = []
    real = Axes.set_xticks
    monkeypatch.setattr(Axes, "set_xticks", lambda self, ticks, labels=None, **kw: (
        seen.append(list(labels or [])), real(self, ticks, labels, **kw))[1])
    ticks = [json.dumps([{"weights": {"general": 1.0, "qa": 0.0}, "until_fraction": 0.75}, {"weights": {"qa": i}}])
             for i in range(1, 7)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = line_plot(tmp_path / "p.png", [Curve("a", list(range(6)), [1, 2, 3, 2, 1, 0], markers=True)],
                            title="t", x_label="x", y_label="y", x_ticks=ticks)
    assert written is not None and is_png(written)
    assert seen and all(len(t) <= 28 and t.endswith("…") for t in seen[0])
