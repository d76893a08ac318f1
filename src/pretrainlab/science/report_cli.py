"""`pretrainlab report RUN_OR_SWEEP`: report.md + a self-contained report.html + plots/*.png."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.md, report.html and plots for a run, sweep or replication")
    p.add_argument("path", help="a run folder, a sweep folder or a replication folder")
    p.add_argument("--out", default=None, help="where to write (default: inside PATH)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pretrainlab.science.report import report_from_cli

    return report_from_cli(args)
