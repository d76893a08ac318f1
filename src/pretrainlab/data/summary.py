"""What `prepare` shows: a progress bar over the bytes read, then a table per domain, the document filters'
removals with a few examples (when filters are configured), and the warnings."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table


def make_progress(enabled: bool) -> Progress:
    """A byte-count progress bar on stderr; disabled when not wanted or stderr is not a terminal."""
    console = Console(file=sys.stderr)
    return Progress(
        TextColumn("[bold]prepare[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


def summary_table(manifest: dict[str, Any]) -> Table:
    """Documents, tokens, bytes, bytes per token, skipped and seconds per domain and split."""
    table = Table(title=f"prepared: {manifest['dtype']} tokens, vocab {manifest['tokenizer']['vocab_size']}")
    for name in ("domain", "split", "documents", "tokens", "bytes", "bytes/token", "skipped", "seconds"):
        table.add_column(name, justify="left" if name in ("domain", "split") else "right")
    for domain, entry in manifest["domains"].items():
        skipped = entry["skipped_empty"] + entry["bad_lines"]
        seconds = manifest.get("timing", {}).get(domain, 0.0)
        for split in ("train", "val"):
            s = entry[split]
            bpt = f"{s['bytes'] / s['tokens']:.2f}" if s["tokens"] else "-"
            table.add_row(
                domain if split == "train" else "",
                split,
                f"{s['documents']:,}",
                f"{s['tokens']:,}",
                f"{s['bytes']:,}",
                bpt,
                f"{skipped:,}" if split == "train" else "",
                f"{seconds:.1f}" if split == "train" else "",
            )
    return table


def filter_table(manifest: dict[str, Any], seconds: list[float] | None = None) -> Table:
    """Per filter of the chain: documents seen and removed, bytes removed, the main reasons, and speed."""
    table = Table(title="document filters (in chain order; a removed document reaches no later filter)")
    for name in ("filter", "domains", "seen", "removed", "removed %", "removed bytes", "reasons", "MB/s (CPU)"):
        table.add_column(name, justify="left" if name in ("filter", "domains", "reasons") else "right")
    for i, f in enumerate(manifest.get("filters", [])):
        share = f"{100 * f['removed'] / f['seen']:.1f}" if f["seen"] else "-"
        reasons = ", ".join(f"{k} {v:,}" for k, v in list(f["reasons"].items())[:4])
        if len(f["reasons"]) > 4:
            reasons += ", ..."
        s = seconds[i] if seconds and i < len(seconds) else 0.0
        speed = f"{f.get('seen_bytes', 0) / s / 1e6:.1f}" if s > 0 else "-"
        table.add_row(f"{i}: {f['name']}", ", ".join(f["domains"]) if f["domains"] else "all", f"{f['seen']:,}",
                      f"{f['removed']:,}", share, f"{f['removed_bytes']:,}", escape(reasons) or "-", speed)
    return table


def filter_examples(manifest: dict[str, Any], per_reason: int = 1, width: int = 100) -> list[str]:
    """One line per example removed document (the first `per_reason` of each reason), for the summary."""
    lines = []
    for i, f in enumerate(manifest.get("filters", [])):
        for reason, examples in f["examples"].items():
            for ex in examples[:per_reason]:
                text = ex["text"] if len(ex["text"]) <= width else ex["text"][: width - 3] + "..."
                lines.append(f"  {i}: {f['name']} / {reason}: {ex['file']}#{ex['index']}: {text!r}")
    return lines


def print_summary(
    manifest: dict[str, Any], warnings: list[str], output: str, filter_seconds: list[float] | None = None
) -> None:
    """The tables on stdout, the warnings on stderr (plain lines, so they are never re-wrapped)."""
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console.width = 120  # logs and pipes: do not squeeze the table to 80 columns
    console.print(summary_table(manifest))
    if manifest.get("filters"):
        console.print(filter_table(manifest, filter_seconds))
        examples = filter_examples(manifest)
        if examples:
            print("examples of removed documents (all in removed.jsonl and the manifest):", file=sys.stdout)
            for line in examples:
                print(line, file=sys.stdout)
    print(f"wrote {output} (fingerprint {manifest['fingerprint'][:16]})", file=sys.stdout)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
