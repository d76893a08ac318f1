"""`pretrainlab replicate NAME [--scale tiny|small] [--seeds K] [--out DIR]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replicate", help="run a paper's protocol at small scale and say whether its claims hold")
    p.add_argument("name", help="replication name (e.g. infinite-compute); `list` shows them all")
    p.add_argument("--scale", choices=["tiny", "small"], default="tiny")
    p.add_argument("--seeds", type=int, default=None, help="seeds per compared point (default: the protocol's)")
    p.add_argument("--out", default=None, help="folder (default: replications/<name>-<scale>)")
    p.add_argument("--data", default=None, help="a prepared-data folder to use instead of the built-in corpus")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: the protocol's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.replicate import replicate_from_cli

    return replicate_from_cli(args)
