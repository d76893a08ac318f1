"""`pretrainlab fit SWEEP_DIR --law power|chinchilla [--x params|params_total|avg_params|tokens|data_tokens]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a scaling law to a sweep's final losses",
        description="Fit L = E + A/x^alpha (or E + A/N^alpha + B/D^beta) to the finished runs of one or more "
        "sweeps, one fit per --by group, with bootstrap 95 percent intervals; writes fit-<law>-<x>.json and .png.",
    )
    p.add_argument("sweeps", nargs="+", help="sweep folder(s) (or a results.csv)")
    p.add_argument("--law", choices=["power", "chinchilla"], default="power")
    p.add_argument(
        "--x",
        choices=["params", "params_total", "avg_params", "tokens", "data_tokens"],
        default="params",
        help="params: final non-embedding parameter count (as Kim et al. 2025); params_total: with embeddings; "
        "avg_params: average count over training (The Journey Matters); tokens: training tokens; "
        "data_tokens: unique training tokens of the run's data. "
        "With --law chinchilla, the parameter axis (tokens is the other)",
    )
    p.add_argument("--y", default="val_loss", help="the metric to fit (a results.csv column)")
    p.add_argument("--by", default=None, help="fit one law per value of this column (e.g. a recipe axis, or sweep)")
    p.add_argument("--extrapolate", type=float, action="append", default=[], help="predict the loss at this x")
    p.add_argument(
        "--extrapolate-tokens",
        type=float,
        default=None,
        help="chinchilla: the token count for --extrapolate (default: the largest in the sweep)",
    )
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--out", default=None, help="folder for fit JSON and plots (default: SWEEP/fits)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.fit_entry import fit_from_cli

    return fit_from_cli(args)
