"""Ensemble evaluation as K grows: the validation loss of members 1..k combined, for every k, and the
asymptote of L(K).

Kim et al. (2025, *Pre-training under infinite compute*, arXiv 2509.14786) ensemble K models that differ
only in seed, predicting with the mean of their logits, and fit L(K) = E_K + A / K^beta: the asymptote
E_K is what an infinite ensemble of that member recipe would reach. `evaluate_ensemble` scores every
validation target once (the windows and bookkeeping of `eval.evaluate`) for all K prefix ensembles at the
cost of one forward pass per member per batch: the combination is kept running (a running sum of logits
for "logits", a running logsumexp of log-probabilities for "probs"), and after member j the ensemble of
members 1..j is scored from it. Each member's own loss comes out of the same pass.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrainlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    import argparse

    from pretrainlab.eval.windows import EvalWindows

COMBINE_RULES = ("logits", "probs")
MIN_K_FOR_FIT = 4
"""The law E + A / K^beta has three parameters: at least four ensemble sizes leave one degree of freedom."""


def evaluate_ensemble(
    specs: list[str | Path],
    *,
    data: str | Path | None = None,
    combine: str = "logits",
    max_tokens_per_domain: int | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    seq_len: int | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    fit: bool = True,
) -> dict[str, Any]:
    """Validation loss and bits-per-byte of the ensembles of members 1..k, k = 1..K, in the given order.

    `specs` are run folders or folders holding an `ensemble.json` (see `eval.members.expand_members`);
    `data` defaults to the first member's prepared folder; `seq_len` and `max_tokens_per_domain` default to
    the first member's `data.seq_len` and `eval.max_tokens_per_domain` (so an ensemble is scored on the
    same windows as its members' own evaluations). `combine` is "logits" (mean of the logits, as Kim et
    al.) or "probs" (mean of the probabilities). Returns the `ensemble.json` record: `members`, `combine`,
    `data`, `k`, `val_loss`, `val_bpb`, `val_loss/<domain>`, `val_bpb/<domain>` (lists over k),
    `member_val_loss`, `member_val_bpb` (each member alone), `val_tokens`, `seq_len`,
    `max_tokens_per_domain`, and `fit`: `fit_power_law(k, val_loss, x_name="K").to_dict()` (its "E" is the
    asymptote E_K, its "alpha" the exponent beta; `bootstrap` resamples with `seed` give its interval)
    when K >= 4 and `fit` is true, else None with the reason in `fit_note`.
    """
    from pretrainlab.eval.entry import eval_autocast_dtype
    from pretrainlab.eval.members import expand_members, load_members
    from pretrainlab.eval.windows import val_windows

    if combine not in COMBINE_RULES:
        raise ConfigError(
            f"combine={combine!r} is not an ensemble rule", hint="use 'logits' (mean of logits) or 'probs'"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
    if seq_len is not None and seq_len < 1:
        raise ConfigError(f"seq_len={seq_len!r} must be a positive integer")
    if max_tokens_per_domain is not None and max_tokens_per_domain < 1:
        raise ConfigError(
            f"max_tokens_per_domain={max_tokens_per_domain!r} must be a positive integer",
            hint="leave it out to use the first member's eval.max_tokens_per_domain",
        )
    if bootstrap < 0:
        raise ConfigError(f"bootstrap={bootstrap!r} must be >= 0 (0: no confidence interval)")
    device = torch.device(device)
    runs = expand_members(specs)
    models, configs, prepared = load_members(specs, data=data, device=device)
    first = configs[0]
    seq_len = first.data.seq_len if seq_len is None else seq_len
    for run, model in zip(runs, models):
        longest = int(model.cfg.max_seq_len)  # type: ignore[union-attr]
        if longest < seq_len:
            raise ConfigError(
                f"ensemble member {run} handles sequences of at most {longest} tokens, shorter than the "
                f"evaluation seq_len {seq_len} (the first member's data.seq_len)",
                hint=f"evaluate at --seq-len (seq_len=) {longest} or lower, or leave that member out",
            )
    cap = first.eval.max_tokens_per_domain if max_tokens_per_domain is None else max_tokens_per_domain
    domains = [d for d in prepared.domains if prepared.shard(d, "val").n_tokens > 1]
    if not domains:
        raise DataError(
            f"{prepared.path} has no validation tokens to evaluate the ensemble on",
            hint="prepare the data with validation.fraction > 0 (or name validation.files), or pass --data",
        )
    windows = [val_windows(prepared.shard(d, "val"), seq_len, prepared.pad_id, cap) for d in domains]
    ensemble_sums, member_sums = score_prefix_ensembles(
        models, windows, combine=combine, batch_size=batch_size, device=device,
        autocast_dtype=eval_autocast_dtype(first, device),
    )
    return _record(
        runs, combine, prepared.path, domains, windows, ensemble_sums, member_sums,
        seq_len=seq_len, cap=cap, bootstrap=bootstrap if fit else None, seed=seed,
    )


def score_prefix_ensembles(
    models: list[nn.Module],
    windows: list[EvalWindows],
    *,
    combine: str,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ensemble sums, member sums), each float64 (K, domains, 2) of (summed loss, scored targets):
    row k-1 of the first is the ensemble of members 1..k, row j of the second member j alone.

    One forward pass per member per batch: after member j the running combination (sum of logits, or
    logsumexp of log-probabilities) is turned into the prefix ensemble's logits and scored.
    """
    from pretrainlab.eval.evaluate import _autocast

    K = len(models)
    ensemble = torch.zeros(K, len(windows), 2, dtype=torch.float64, device=device)
    member = torch.zeros_like(ensemble)
    for m in models:
        m.eval()
    with torch.inference_mode():
        for i, win in enumerate(windows):
            for start in range(0, win.rows, batch_size):
                rows = torch.from_numpy(win.tokens[start : start + batch_size]).to(device)
                mask = torch.from_numpy(win.loss_mask[start : start + batch_size, 1:]).to(device)
                inputs, targets = rows[:, :-1], rows[:, 1:]
                running: torch.Tensor | None = None
                for j, m in enumerate(models):
                    with _autocast(device, autocast_dtype):
                        logits = m.logits(m(inputs)).float()  # type: ignore[operator]
                    member[j, i] += _masked_loss(logits, targets, mask)
                    if combine == "logits":
                        running = logits if running is None else running + logits
                        combined = running / (j + 1)
                    else:
                        logp = torch.log_softmax(logits, dim=-1)
                        running = logp if running is None else torch.logaddexp(running, logp)
                        combined = running - math.log(j + 1)
                    ensemble[j, i] += _masked_loss(combined, targets, mask)
    return ensemble.cpu(), member.cpu()


def _masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(summed cross-entropy over the masked-in targets, their count), float64."""
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    m = mask.reshape(-1).double()
    return torch.stack([(losses.double() * m).sum(), m.sum()])


def _record(
    runs: list[Path],
    combine: str,
    data_path: Path,
    domains: list[str],
    windows: list[EvalWindows],
    ensemble_sums: torch.Tensor,
    member_sums: torch.Tensor,
    *,
    seq_len: int,
    cap: int | None,
    bootstrap: int | None,
    seed: int,
) -> dict[str, Any]:
    from pretrainlab.eval.evaluate import _summarise

    K = len(runs)
    per_k = [_summarise(domains, windows, ensemble_sums[k]) for k in range(K)]
    alone = [_summarise(domains, windows, member_sums[j]) for j in range(K)]
    out: dict[str, Any] = {
        "members": [str(Path(r).resolve()) for r in runs],
        "combine": combine,
        "data": str(data_path),
        "seq_len": seq_len,
        "max_tokens_per_domain": cap,
        "k": list(range(1, K + 1)),
        "val_loss": [m["val_loss"] for m in per_k],
        "val_bpb": [m["val_bpb"] for m in per_k],
    }
    for d in domains:
        out[f"val_loss/{d}"] = [m[f"val_loss/{d}"] for m in per_k]
        out[f"val_bpb/{d}"] = [m[f"val_bpb/{d}"] for m in per_k]
    out["val_tokens"] = per_k[0]["val_tokens"]
    out["member_val_loss"] = [m["val_loss"] for m in alone]
    out["member_val_bpb"] = [m["val_bpb"] for m in alone]
    if bootstrap is None:
        out["fit"], out["fit_note"] = None, "no asymptote fit: not asked for (fit=False)"
    else:
        out["fit"], out["fit_note"] = fit_ensemble_law(out["k"], out["val_loss"], bootstrap=bootstrap, seed=seed)
    return out


def fit_ensemble_law(
    k: list[int], val_loss: list[float], *, bootstrap: int = 200, seed: int = 0
) -> tuple[dict[str, Any] | None, str | None]:
    """(fit of L(K) = E_K + A / K^beta as `FitResult.to_dict()`, None) or (None, why there is no fit).

    Fewer than MIN_K_FOR_FIT sizes leave the 3-parameter law without a degree of freedom; a degenerate
    curve (e.g. identical members, so L does not fall with K) is reported, not raised, since the
    ensemble's figures stand without the fit.
    """
    if len(k) < MIN_K_FOR_FIT:
        return None, (
            f"no asymptote fit: L(K) = E + A/K^beta has 3 parameters and needs at least {MIN_K_FOR_FIT} "
            f"ensemble sizes (got K = {len(k)})"
        )
    from pretrainlab.science.fit import FitError, fit_power_law

    try:
        fit = fit_power_law(np.asarray(k, dtype=float), np.asarray(val_loss, dtype=float),
                            bootstrap=bootstrap, seed=seed, x_name="K")
    except FitError as e:
        return None, f"no asymptote fit: {e.message}"
    return fit.to_dict(), None


# ---------------------------------------------------------------------- outputs


def write_ensemble(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write `<out>/ensemble.json` and `<out>/ensemble.png` (each under a temporary name, then renamed).

    The folder then works as a teacher or ensemble spec (it lists the members); it must not be a run
    folder, whose config.yaml would make it read as a single run.
    """
    out = Path(out)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_ensemble(result, out / "ensemble.png")
    path = out / "ensemble.json"
    tmp = out / ".ensemble.json.tmp"
    tmp.write_text(json.dumps(_json_safe(result), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path, png


def check_out_folder(out: str | Path) -> None:
    """ConfigError when `out` is a run folder: its config.yaml would make the ensemble.json unreadable as
    a member list (see `eval.members.expand_members`)."""
    if (Path(out) / "config.yaml").is_file():
        raise ConfigError(
            f"--out {out} is a run folder (it has config.yaml); an ensemble.json there would be ignored",
            hint="write the ensemble to a folder of its own, e.g. --out ensembles/seeds-0-3",
        )


def plot_ensemble(result: dict[str, Any], path: str | Path) -> Path:
    """Validation loss against K (log axis): the prefix ensembles, each member alone, and the fitted law
    with its band and asymptote when there is a fit. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    k = np.asarray(result["k"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.plot(k, result["val_loss"], "o-", color="C0", label=f"ensemble (mean of {result['combine']})")
        ax.scatter(k, result["member_val_loss"], marker="x", color="C1", label="member k alone")
        fit = result.get("fit")
        if fit:
            curve = fit.get("curve") or {}
            if curve.get("x"):
                ax.plot(curve["x"], curve["y"], "--", color="C2", label="fit E + A/K^beta")
                if curve.get("lo") and curve.get("hi"):
                    ax.fill_between(curve["x"], curve["lo"], curve["hi"], color="C2", alpha=0.2, label="95% band")
            e = fit["params"]["E"]
            ax.axhline(e, color="C3", linestyle=":", label=f"asymptote E_K = {e:.4f}")
        # The y-range follows the points, the fitted curve and the asymptote; a wide bootstrap band (a
        # poorly determined fit) is clipped rather than allowed to flatten the points.
        shown = [*result["val_loss"], *result["member_val_loss"]]
        if fit:
            shown += [*((fit.get("curve") or {}).get("y") or []), fit["params"]["E"]]
        shown = [v for v in shown if v is not None and math.isfinite(v)]
        if shown:
            lo, hi = min(shown), max(shown)
            pad = 0.1 * (hi - lo) or 0.01 * abs(hi) or 0.01
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xscale("log")
        ax.set_xticks(k)
        ax.set_xticklabels([str(int(x)) for x in k])
        ax.set_xlabel("ensemble size K")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title("Ensemble loss vs K")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


def print_ensemble_table(result: dict[str, Any]) -> None:
    """Rich table: k, validation loss, bpb, and the gain over the mean member; then the asymptote."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    member_mean = float(np.mean(result["member_val_loss"]))
    table = Table(title=f"ensemble of {len(result['k'])} (mean of {result['combine']}) on {result['data']}")
    table.add_column("k", justify="right")
    table.add_column("val_loss", justify="right")
    table.add_column("val_bpb", justify="right")
    table.add_column("gain over member mean", justify="right")
    table.add_column("member k alone", justify="right")
    for i, k in enumerate(result["k"]):
        table.add_row(
            str(k), f"{result['val_loss'][i]:.4f}", f"{result['val_bpb'][i]:.4f}",
            f"{member_mean - result['val_loss'][i]:+.4f}", f"{result['member_val_loss'][i]:.4f}",
        )
    console.print(table)
    fit = result.get("fit")
    if fit:
        e = fit["params"]["E"]
        ci = fit.get("ci", {}).get("E")
        interval = f" (95% interval {ci[0]:.4f} .. {ci[1]:.4f})" if ci else ""
        console.print(
            f"asymptote E_K = {e:.4f}{interval}; L(K) = {e:.4f} + {fit['params']['A']:.4f} / "
            f"K^{fit['params']['alpha']:.3f}"
        )
    else:
        console.print(result.get("fit_note") or "no asymptote fit")


def ensemble_from_cli(args: argparse.Namespace) -> int:
    """`pretrainlab ensemble RUN_A RUN_B ...`: evaluate, print the table, write ensemble.json + .png."""
    from pretrainlab.train.distributed import resolve_device

    check_out_folder(args.out)  # before the evaluation, not after it
    result = evaluate_ensemble(
        args.runs,
        data=args.data,
        combine=args.combine,
        max_tokens_per_domain=args.max_tokens,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        seq_len=args.seq_len,
        bootstrap=args.bootstrap,
    )
    print_ensemble_table(result)
    path, png = write_ensemble(result, args.out)
    print(f"wrote {path} and {png}")
    return 0


def _json_safe(value: Any) -> Any:
    """NaN / infinity become null, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
