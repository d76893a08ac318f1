"""`pretrainlab fit SWEEP_DIR --law power|chinchilla [--x params|avg_params|tokens]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a scaling law to a sweep's final losses")
    p.add_argument("sweeps", nargs="+", help="sweep folder(s) (or a results.csv)")
    p.add_argument("--law", choices=["power", "chinchilla"], default="power")
    p.add_argument("--x", choices=["params", "avg_params", "tokens"], default="params")
    p.add_argument("--y", default="val_loss", help="the metric to fit (a results.csv column)")
    p.add_argument("--by", default=None, help="fit one law per value of this column (e.g. a recipe axis)")
    p.add_argument("--extrapolate", type=float, action="append", default=[], help="predict the loss at this x")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--out", default=None, help="folder for fit JSON and plots (default: SWEEP/fits)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.fit_entry import fit_from_cli

    return fit_from_cli(args)
