"""`pretrainlab ensemble RUN_A RUN_B ... [--data PREPARED] [--combine logits|probs] [--out DIR]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="evaluate the ensemble of several runs as K grows")
    p.add_argument("runs", nargs="+", help="member run folders (same tokenizer), or folders holding an ensemble.json")
    p.add_argument("--data", default=None, help="prepared-data folder (default: the first member's)")
    p.add_argument("--combine", choices=["logits", "probs"], default="logits", help="mean of logits (default) or of probabilities")
    p.add_argument("--out", default="ensemble", help="folder for ensemble.json and its plot (default: ./ensemble)")
    p.add_argument("--max-tokens", type=int, default=None, help="validation tokens per domain (default: the first member's eval setting)")
    p.add_argument("--seq-len", type=int, default=None, help="evaluation window length (default: the first member's data.seq_len)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the asymptote's interval (default 200)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:<i> (default auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.ensemble import ensemble_from_cli

    return ensemble_from_cli(args)
