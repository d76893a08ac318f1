"""`pretrainlab synthesize TEACHER... --tokens N --out PREPARED [--data BASE]`: sequence-level distillation data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synthesize", help="sample token sequences from a teacher or ensemble into a prepared-data domain"
    )
    p.add_argument("teachers", nargs="+", help="teacher run folder(s); several are sampled as an ensemble")
    p.add_argument("--tokens", type=int, required=True,
                   help="about N tokens: whole streams of sampled tokens, each stream's last document closed with "
                   "one end-of-text")
    p.add_argument("--out", required=True, help="new prepared-data folder: the base data plus the synthetic domain")
    p.add_argument("--data", default=None, help="base prepared data to copy in (default: the first teacher's)")
    p.add_argument("--domain", default="synthetic", help="name of the synthetic domain")
    p.add_argument("--combine", choices=["logits", "probs"], default="logits",
                   help="ensemble rule: mean of logits (Kim et al.) or mean of probabilities")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="the teachers' context window while sampling (default: their seq_len)")
    p.add_argument("--batch-size", type=int, default=64, help="streams sampled at once")
    p.add_argument("--seed", type=int, default=0, help="same seed, batch size and device: same tokens")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared-data folder at --out")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:<i>")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="autocast while sampling (auto: bf16 where the hardware computes it natively)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.synthesize import synthesize_from_cli

    return synthesize_from_cli(args)
