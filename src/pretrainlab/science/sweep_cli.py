"""`pretrainlab sweep SWEEP.yaml [overrides] [--executor local|ray] [--jobs N] [--dry-run]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run many training runs from one sweep file into one sweep folder")
    p.add_argument("config", help="sweep file (YAML): base config, axes of dotted overrides, seeds")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the sweep file, e.g. jobs=2")
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="where runs execute (default: the file's, else local)")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (local: threads are split across them)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the points; run nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.sweep import sweep_from_cli

    return sweep_from_cli(args)
